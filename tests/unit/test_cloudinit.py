"""The NoCloud seed, read back from its ISO image as a guest's cloud-init would find it."""

from __future__ import annotations

import yaml

from cloudplane.providers.cloudinit import Seed, read_iso

KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob@desk",
)


def test_the_seed_iso_is_labelled_cidata_and_holds_meta_and_user_data() -> None:
    label, files = read_iso(Seed("i-1234", "web.example.test", KEYS, "$6$rounds=5000$salt$hash").iso())
    assert label == "cidata"
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "i-1234", "local-hostname": "web.example.test"}
    assert files["user-data"].startswith("#cloud-config\n")
    user_data = yaml.safe_load(files["user-data"])
    assert user_data["hostname"] == "web" and user_data["fqdn"] == "web.example.test"
    assert user_data["ssh_authorized_keys"] == list(KEYS)
    assert user_data["disable_root"] is False  # root's keys work as they are, not as a "log in as debian" stub
    assert user_data["chpasswd"]["users"] == [{"name": "root", "password": "$6$rounds=5000$salt$hash", "type": "hash"}]


def test_without_a_password_nothing_about_passwords_is_said() -> None:
    _, files = read_iso(Seed("i-1", "db01", KEYS[:1]).iso())
    user_data = yaml.safe_load(files["user-data"])
    assert user_data["hostname"] == "db01" and "fqdn" not in user_data
    assert "chpasswd" not in user_data and "ssh_pwauth" not in user_data
    assert user_data["ssh_authorized_keys"] == [KEYS[0]]


def test_yaml_special_characters_in_a_key_comment_survive() -> None:
    key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "x": #y'
    _, files = read_iso(Seed("i-2", "h", (key,)).iso())
    assert yaml.safe_load(files["user-data"])["ssh_authorized_keys"] == [key]
