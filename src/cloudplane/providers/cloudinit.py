"""cloud-init NoCloud seeds: the hostname, root's SSH keys and password hash as an ISO 9660 image labelled `cidata`.

Built in Python (pycdlib), so a provider can upload it to a remote host without genisoimage or a local mount.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import yaml

try:
    import pycdlib
except ImportError:  # only building a seed needs it; the libvirt extra installs it
    pycdlib = None  # type: ignore[assignment]

VOLUME_LABEL = "cidata"
# ISO 9660 names (8.3, upper case) for the files; guests read the Rock Ridge and Joliet names.
FILES = {"meta-data": "/METADATA.;1", "user-data": "/USERDATA.;1"}


@dataclass(frozen=True)
class Seed:
    instance_id: str
    hostname: str
    ssh_public_keys: tuple[str, ...] = ()
    root_password_hash: str | None = None

    def meta_data(self) -> str:
        return yaml.safe_dump({"instance-id": self.instance_id, "local-hostname": self.hostname}, sort_keys=False)

    def user_data(self) -> str:
        """#cloud-config for root: keys installed as they are (`disable_root: false`: no "log in as debian" stub)."""
        config: dict[str, object] = {"hostname": self.hostname.split(".", 1)[0]}
        if "." in self.hostname:
            config["fqdn"] = self.hostname
        config |= {
            "preserve_hostname": False,
            "manage_etc_hosts": True,
            "disable_root": False,
            "ssh_authorized_keys": list(self.ssh_public_keys),
        }
        if self.root_password_hash:
            config["chpasswd"] = {
                "expire": False,
                "users": [{"name": "root", "password": self.root_password_hash, "type": "hash"}],
            }
            config["ssh_pwauth"] = True
        return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)

    def iso(self) -> bytes:
        """The seed as an ISO image: `meta-data` and `user-data` at its root, volume label `cidata`."""
        if pycdlib is None:
            raise RuntimeError("pycdlib is not installed: pip install 'cloudplane[libvirt]'")
        image = pycdlib.PyCdlib()
        image.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
        for name, content in (("meta-data", self.meta_data()), ("user-data", self.user_data())):
            data = content.encode()
            image.add_fp(io.BytesIO(data), len(data), FILES[name], rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        image.write_fp(out)
        image.close()
        return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """The volume label and the files of a seed ISO, by their Rock Ridge names (for tests and diagnostics)."""
    if pycdlib is None:
        raise RuntimeError("pycdlib is not installed: pip install 'cloudplane[libvirt]'")
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(data))
    try:
        files = {}
        for name in FILES:
            out = io.BytesIO()
            image.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return image.pvd.volume_identifier.decode().strip(), files
    finally:
        image.close()
