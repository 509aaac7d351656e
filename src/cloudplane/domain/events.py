"""The vocabulary of events: what happened, named once for every face, webhook and the audit log.

Names follow the CloudVPS document's webhook events (`vps.created`, `vps.backup.failed`, `user.registered` ...):
a server is a "vps" whichever face made it, a snapshot a "vps.backup". An accepted long action writes its
`...ing`/`..._requested` event in the request's transaction, and its outcome event when its operation ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    VPS_CREATE_REQUESTED = "vps.create_requested"
    VPS_CREATED = "vps.created"
    VPS_CREATE_FAILED = "vps.create_failed"
    VPS_START_REQUESTED = "vps.start_requested"
    VPS_STARTED = "vps.started"
    VPS_STOP_REQUESTED = "vps.stop_requested"
    VPS_STOPPED = "vps.stopped"
    VPS_REBOOT_REQUESTED = "vps.reboot_requested"
    VPS_REBOOTED = "vps.rebooted"
    VPS_DELETE_REQUESTED = "vps.delete_requested"
    VPS_DELETED = "vps.deleted"
    VPS_RENAMED = "vps.renamed"
    VPS_ACTION_FAILED = "vps.action_failed"
    # The reconciler found the machine changed or gone behind Cloudplane's back.
    VPS_DRIFTED = "vps.drifted"
    VPS_BACKUP_REQUESTED = "vps.backup.requested"
    VPS_BACKUP_CREATED = "vps.backup.created"
    VPS_BACKUP_FAILED = "vps.backup.failed"
    VPS_BACKUP_DELETE_REQUESTED = "vps.backup.delete_requested"
    VPS_BACKUP_DELETED = "vps.backup.deleted"
    VPS_BACKUP_SCHEDULE_CHANGED = "vps.backup.schedule_changed"
    VPS_CONSOLE_OPENED = "vps.console_opened"
    VPS_RESTORE_REQUESTED = "vps.restore_requested"
    VPS_RESTORED = "vps.restored"
    VPS_REBUILD_REQUESTED = "vps.rebuild_requested"
    VPS_REBUILT = "vps.rebuilt"
    VPS_SUSPEND_REQUESTED = "vps.suspend_requested"
    VPS_SUSPENDED = "vps.suspended"
    VPS_UNSUSPEND_REQUESTED = "vps.unsuspend_requested"
    VPS_UNSUSPENDED = "vps.unsuspended"
    VPS_FIREWALL_UPDATE_REQUESTED = "vps.firewall.update_requested"
    VPS_FIREWALL_UPDATED = "vps.firewall.updated"
    VPS_FIREWALL_UPDATE_FAILED = "vps.firewall.update_failed"
    VPS_IP_ATTACH_REQUESTED = "vps.ip.attach_requested"
    VPS_IP_ATTACHED = "vps.ip.attached"
    VPS_IP_ATTACH_FAILED = "vps.ip.attach_failed"
    VPS_PASSWORD_RESET_REQUESTED = "vps.password_reset_requested"
    VPS_PASSWORD_RESET = "vps.password_reset"
    VPS_BACKUP_RENAMED = "vps.backup.renamed"
    SSH_KEY_CREATED = "ssh_key.created"
    SSH_KEY_DELETED = "ssh_key.deleted"
    USER_REGISTERED = "user.registered"
    USER_SUSPENDED = "user.suspended"
    USER_TIER_CHANGED = "user.tier_changed"
    USER_UPDATED = "user.updated"
    USER_PASSWORD_CHANGED = "user.password_changed"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_METHOD_ADDED = "payment_method.added"
    PAYMENT_METHOD_REMOVED = "payment_method.removed"
    # The tier changed now (an upgrade, or a change due at the end of the period).
    SUBSCRIPTION_UPDATED = "subscription.updated"
    # A downgrade or a cancellation was set (or withdrawn) for the end of the period.
    SUBSCRIPTION_UPDATE_SCHEDULED = "subscription.update_scheduled"
    # A paid period renewed; its price goes on the month's invoice.
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    APP_CREATED = "app.created"
    APP_UPDATED = "app.updated"
    APP_DELETED = "app.deleted"
    DEPLOYMENT_REQUESTED = "deployment.requested"
    # Built into a release (later seams: and rolled out).
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_FAILED = "deployment.failed"
    TICKET_CREATED = "ticket.created"
    TICKET_REPLIED = "ticket.replied"
    TICKET_STATUS_CHANGED = "ticket.status_changed"
    TICKET_UPDATED = "ticket.updated"
    TICKET_ASSIGNED = "ticket.assigned"
    INVOICE_CREATED = "invoice.created"
    INVOICE_PAID = "invoice.paid"
    INVOICE_OVERDUE = "invoice.overdue"
    # Dunning suspended an account's servers for an overdue invoice, or lifted that once it was paid.
    ACCOUNT_DUNNING_SUSPENDED = "account.dunning_suspended"
    ACCOUNT_DUNNING_LIFTED = "account.dunning_lifted"
    # An administrator's changes to webhook endpoints (for the audit log; never sent as webhooks).
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"
    WEBHOOK_REDELIVERED = "webhook.redelivered"


# The CloudVPS document's webhook events, in its order: what an endpoint can subscribe to. Every other event stays
# in the outbox for the audit log.
WEBHOOK_EVENTS: tuple[EventType, ...] = (
    EventType.VPS_CREATED,
    EventType.VPS_STARTED,
    EventType.VPS_STOPPED,
    EventType.VPS_DELETED,
    EventType.VPS_BACKUP_CREATED,
    EventType.VPS_BACKUP_FAILED,
    EventType.INVOICE_CREATED,
    EventType.INVOICE_PAID,
    EventType.INVOICE_OVERDUE,
    EventType.PAYMENT_SUCCEEDED,
    EventType.PAYMENT_FAILED,
    EventType.USER_REGISTERED,
    EventType.USER_SUSPENDED,
)


@dataclass(frozen=True)
class OperationEvents:
    """The events of one kind of operation: written when accepted, when it succeeds, when it fails."""

    accepted: EventType
    succeeded: EventType
    failed: EventType


# One line per kind of operation; a new kind adds its line here and its workflow in its own module.
OPERATION_EVENTS: dict[str, OperationEvents] = {
    "create": OperationEvents(EventType.VPS_CREATE_REQUESTED, EventType.VPS_CREATED, EventType.VPS_CREATE_FAILED),
    "rent": OperationEvents(EventType.VPS_CREATE_REQUESTED, EventType.VPS_CREATED, EventType.VPS_CREATE_FAILED),
    "start": OperationEvents(EventType.VPS_START_REQUESTED, EventType.VPS_STARTED, EventType.VPS_ACTION_FAILED),
    "stop": OperationEvents(EventType.VPS_STOP_REQUESTED, EventType.VPS_STOPPED, EventType.VPS_ACTION_FAILED),
    "reboot": OperationEvents(EventType.VPS_REBOOT_REQUESTED, EventType.VPS_REBOOTED, EventType.VPS_ACTION_FAILED),
    "delete": OperationEvents(EventType.VPS_DELETE_REQUESTED, EventType.VPS_DELETED, EventType.VPS_ACTION_FAILED),
    "snapshot": OperationEvents(
        EventType.VPS_BACKUP_REQUESTED, EventType.VPS_BACKUP_CREATED, EventType.VPS_BACKUP_FAILED
    ),
    "delete_snapshot": OperationEvents(
        EventType.VPS_BACKUP_DELETE_REQUESTED, EventType.VPS_BACKUP_DELETED, EventType.VPS_BACKUP_FAILED
    ),
    "restore": OperationEvents(EventType.VPS_RESTORE_REQUESTED, EventType.VPS_RESTORED, EventType.VPS_ACTION_FAILED),
    "rebuild": OperationEvents(EventType.VPS_REBUILD_REQUESTED, EventType.VPS_REBUILT, EventType.VPS_ACTION_FAILED),
    "suspend": OperationEvents(EventType.VPS_SUSPEND_REQUESTED, EventType.VPS_SUSPENDED, EventType.VPS_ACTION_FAILED),
    "resume": OperationEvents(
        EventType.VPS_UNSUSPEND_REQUESTED, EventType.VPS_UNSUSPENDED, EventType.VPS_ACTION_FAILED
    ),
    "firewall": OperationEvents(
        EventType.VPS_FIREWALL_UPDATE_REQUESTED, EventType.VPS_FIREWALL_UPDATED, EventType.VPS_FIREWALL_UPDATE_FAILED
    ),
    "attach_ip": OperationEvents(
        EventType.VPS_IP_ATTACH_REQUESTED, EventType.VPS_IP_ATTACHED, EventType.VPS_IP_ATTACH_FAILED
    ),
    "reset_password": OperationEvents(
        EventType.VPS_PASSWORD_RESET_REQUESTED, EventType.VPS_PASSWORD_RESET, EventType.VPS_ACTION_FAILED
    ),
    "deploy": OperationEvents(
        EventType.DEPLOYMENT_REQUESTED, EventType.DEPLOYMENT_SUCCEEDED, EventType.DEPLOYMENT_FAILED
    ),
}
