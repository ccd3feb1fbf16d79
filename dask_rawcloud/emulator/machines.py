"""Emulated EC2: a moto control plane whose instances really boot, as local processes.

``Emulator`` runs a moto server on 127.0.0.1 behind the fault proxy (its
``endpoint_url``), an instance metadata service, and a watcher. Every
instance launched with this tool's tags through the endpoint:

1. gets a loopback address of its own (127.x.y.z), which EC2 then reports as
   its private and public IP, before the launch call even returns: nothing
   ever sees, let alone connects to, a 10.x or 172.x address;
2. boots from its own user-data: the spec and the node agent command it
   carries run with this machine's Python, in a process group of their own;
   the environment-preparation part (package installs) is skipped, and the
   instance's console output says so;
3. ends as a VM does: TerminateInstances kills its process group, and when
   its agent exits (the machine "powers off") the instance is terminated, as
   InstanceInitiatedShutdownBehavior=terminate does.

Spot interruptions (``interrupt``) post a notice in the instance's metadata
and terminate it when the notice runs out. Boot failures (``fail_boot``)
make a node's bootstrap exit at once, as a failed package install would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..bootstrap import parse_user_data
from ..node import EMULATED_ENV, NODE_ENV
from .faults import FaultProxy
from .metadata import MetadataService

__all__ = ["REHEARSAL", "Emulator", "Instance"]

logger = logging.getLogger(__name__)

TAG_CLUSTER = "rawcloud:cluster"  # the provider's tag (not imported: no aiobotocore needed here)
_INSTANCE_ID = re.compile(rb"\bi-[0-9a-f]{8,17}\b")
#: Moto's settings for an emulator that refuses what AWS refuses; read when moto is imported.
_MOTO_ENV = {"MOTO_ENABLE_AMI_VALIDATION": "true",
             "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}


#: Settings for a rehearsal on one machine that keeps its shape but not AWS's
#: pace: processes boot in seconds, not minutes, so failures are caught in
#: seconds; and the billing minimum is shortened so an idle worker retires
#: in seconds. Use with ``dask.config.set(REHEARSAL)``.
REHEARSAL = {
    "rawcloud.aws.boot-timeout": "60s",
    "rawcloud.aws.billing-minimum": "5s",
    "rawcloud.aws.spot-notice-poll": "500ms",
    "rawcloud.node-watch-interval": "1s",
    "rawcloud.worker.death-timeout": "15s",
}


@dataclass
class Instance:
    """One emulated instance: its address, its process and its console log."""

    id: str
    cluster_id: str
    region: str
    address: str
    log: pathlib.Path
    spot: bool
    boot_at: float
    command: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    ended: bool = False
    kill_at: float | None = None  # SIGKILL the group then, if SIGTERM did not end it
    interrupt_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Emulator:
    """A local EC2 for rehearsals and tests. Use as a (sync or async) context manager.

    Parameters
    ----------
    boot_delay_s : float
        Time from launch to the node agent starting, like a VM's boot.
    terminate_grace_s : float
        SIGTERM to SIGKILL on termination, like a VM's shutdown.
    workdir : path, optional
        Where node specs and console logs go (default: a temporary directory).
    """

    def __init__(self, boot_delay_s: float = 0.0, terminate_grace_s: float = 5.0,
                 workdir: str | os.PathLike | None = None):
        self.boot_delay_s = boot_delay_s
        self.terminate_grace_s = terminate_grace_s
        self._own_workdir = workdir is None
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="rawcloud-emulator-"))
        self.instances: dict[str, Instance] = {}
        #: One line per instance whose environment-preparation part was skipped.
        self.skipped: list[str] = []
        self._fail_boots: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        # 127.0.0.0/8 is loopback on Linux; a random second octet keeps two
        # emulators on one machine apart.
        self._net = random.randrange(16, 250)
        self._next_host = 0
        self._moto: Any = None
        self.proxy: FaultProxy | None = None
        self.metadata = MetadataService()
        self._watcher: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Emulator:
        for key, value in _MOTO_ENV.items():
            os.environ.setdefault(key, value)
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.proxy = FaultProxy(f"http://{host}:{port}").start()
        for action in ("CreateFleet", "RunInstances"):
            self.proxy.after(action, self._adopt)
        self.proxy.after("TerminateInstances", self._terminated)
        self.proxy.answer("GetConsoleOutput", self._console_output)
        self.metadata.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="rawcloud-emulator")
        self._watcher.start()
        logger.info("EC2 emulator at %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        with self._lock:
            for instance in self.instances.values():
                self._kill(instance, signal.SIGKILL)
                if not instance.ended:  # its "machine" is gone: so is the instance
                    self._end(instance, "the emulator stopped")
        if self.proxy is not None:
            self.proxy.stop()
        self.metadata.stop()
        if self._moto is not None:
            self._moto.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.stop)

    # -- what users point at it ------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        assert self.proxy is not None, "start the emulator first"
        return self.proxy.url

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto and dask-rawcloud at the emulator."""
        return {
            "DASK_RAWCLOUD__AWS__ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "emulator",
            "AWS_SECRET_ACCESS_KEY": "emulator",
            "AWS_EC2_METADATA_DISABLED": "true",  # the client is no instance
        }

    @property
    def config(self) -> dict[str, Any]:
        """The endpoint for ``dask.config.set``, where environment variables do not reach."""
        return {"rawcloud.aws.endpoint-url": self.endpoint_url}

    # -- faults -----------------------------------------------------------------
    def inject_capacity_error(self, instance_type: str | None = None, zone: str | None = None,
                              market: str | None = None, region: str | None = None) -> None:
        assert self.proxy is not None
        self.proxy.inject_capacity_error(instance_type=instance_type, zone=zone, market=market,
                                         region=region)

    def throttle(self, action: str, times: int = 1) -> None:
        assert self.proxy is not None
        self.proxy.throttle(action, times)

    def limit_instances(self, total: int) -> None:
        assert self.proxy is not None
        self.proxy.limit_instances(total)

    def fail_boot(self, times: int = 1,
                  message: str = "pip install failed: no matching distribution") -> None:
        """The next ``times`` instances' bootstrap fails at once, printing ``message``."""
        with self._lock:
            self._fail_boots += [message] * times

    def interrupt(self, instance_id: str, notice_s: float = 120.0) -> None:
        """A spot interruption: a notice in the instance's metadata, termination after it."""
        with self._lock:
            instance = self.instances[instance_id]
            when = time.time() + notice_s
            instance.interrupt_at = when
            stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
            self.metadata.put(instance_id, **{"spot/instance-action": (
                '{"action": "terminate", "time": "%s"}' % stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))})
        self._console(instance, f"spot interruption notice: terminating in {notice_s:g}s")

    def running(self) -> list[Instance]:
        """Instances whose node process runs."""
        with self._lock:
            return [i for i in self.instances.values() if i.alive]

    def logs(self, instance_id: str) -> str:
        instance = self.instances.get(instance_id)
        return instance.log.read_text(errors="replace") if instance else ""

    # -- moto's side --------------------------------------------------------------
    @staticmethod
    def _backend(region: str) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return ec2_backends[DEFAULT_ACCOUNT_ID][region]

    def _adopt(self, region: str, params: dict[str, str], body: bytes) -> None:
        """New instances: give each an address and a boot, before the caller sees them."""
        backend = self._backend(region)
        for instance_id in dict.fromkeys(i.decode() for i in _INSTANCE_ID.findall(body)):
            if instance_id in self.instances:
                continue  # an answer replayed for a repeated ClientToken
            try:
                vm = backend.get_instance(instance_id)
            except Exception:  # noqa: BLE001 (moto's not-found error)
                continue
            tags = {t["key"]: t["value"] for t in vm.get_tags()}
            if TAG_CLUSTER not in tags:
                continue
            self._boot(region, vm, tags[TAG_CLUSTER])

    def _boot(self, region: str, vm: Any, cluster_id: str) -> None:
        with self._lock:
            self._next_host += 1
            n = self._next_host
            address = f"127.{self._net}.{n // 250}.{n % 250 + 1}"
            nic = vm.nics[0]
            nic.private_ip_address = address
            if nic.public_ip:
                nic.public_ip = address
            spot = getattr(vm, "lifecycle", None) == "spot"
            log = self.workdir / f"{vm.id}.log"
            instance = Instance(vm.id, cluster_id, region, address, log, spot,
                                time.time() + self.boot_delay_s)
            self.instances[vm.id] = instance
        zone = vm.placement
        self.metadata.put(vm.id, **{
            "instance-id": vm.id, "local-ipv4": address, "instance-type": vm.instance_type,
            "ami-id": vm.image_id, "placement/availability-zone": zone,
            "placement/region": region, "instance-life-cycle": "spot" if spot else "on-demand",
            **({"public-ipv4": address} if nic.public_ip else {}),
        })
        self._console(instance, f"booting {vm.id} ({vm.instance_type}, {zone}, "
                                f"{'spot' if spot else 'on-demand'}) at {address}")
        try:
            boot = parse_user_data(_user_data(vm))
        except ValueError as e:
            self._console(instance, f"no node to start: {e}")
            return
        spec = self.workdir / f"{vm.id}.spec"
        spec.write_bytes(gzip.decompress(boot.spec))
        spec.chmod(0o600)
        command = list(boot.command)
        if command and command[0].startswith("python"):
            command[0] = sys.executable  # this machine's Python, which has the packages
        if "--spec" in command:
            command[command.index("--spec") + 1] = str(spec)
        if boot.prepare:
            note = (f"{vm.id}: skipped the environment preparation ({len(boot.prepare)} lines: "
                    "this machine's Python already has the packages)")
            self.skipped.append(note)
            self._console(instance, note)
        with self._lock:
            if self._fail_boots:
                message = self._fail_boots.pop(0)
                command = [sys.executable, "-c", f"import sys; sys.exit({message!r})"]
        instance.command = command

    def _start(self, instance: Instance) -> None:
        env = {**os.environ, EMULATED_ENV: "1", NODE_ENV: f"{instance.cluster_id}/{instance.id}",
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.metadata.endpoint(instance.id)}
        for key in ("DASK_RAWCLOUD__AWS__ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
            env.pop(key, None)  # a node holds no cloud credentials of the client's
        with instance.log.open("ab") as out:
            instance.process = subprocess.Popen(
                instance.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.workdir, start_new_session=True,
            )

    def _end(self, instance: Instance, why: str) -> None:
        """The machine powered off or was terminated: moto says terminated from now on."""
        instance.ended = True
        self._console(instance, why)
        try:
            self._backend(instance.region).terminate_instances([instance.id])
        except Exception as e:  # noqa: BLE001 (already terminated in moto)
            logger.debug("terminate %s in moto: %s", instance.id, e)

    def _terminated(self, region: str, params: dict[str, str], body: bytes) -> None:
        """TerminateInstances: the instance's processes get SIGTERM, then SIGKILL."""
        ids = [v for k, v in params.items() if k.startswith("InstanceId.")]
        with self._lock:
            for instance_id in ids:
                instance = self.instances.get(instance_id)
                if instance is not None and not instance.ended:
                    instance.ended = True
                    self._console(instance, "TerminateInstances: shutting down")
                    self._kill(instance, signal.SIGTERM)
                    instance.kill_at = time.time() + self.terminate_grace_s

    def _console_output(self, region: str, params: dict[str, str]) -> bytes | None:
        instance = self.instances.get(params.get("InstanceId", ""))
        if instance is None:
            return None
        text = instance.log.read_bytes()[-64 * 1024:] if instance.log.exists() else b""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return (
            '<?xml version="1.0" encoding="UTF-8"?><GetConsoleOutputResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><instanceId>{instance.id}</instanceId>"
            f"<timestamp>{stamp}</timestamp><output>{base64.b64encode(text).decode()}</output>"
            "</GetConsoleOutputResponse>"
        ).encode()

    # -- the watcher ----------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            with self._lock:
                instances = list(self.instances.values())
            for instance in instances:
                try:
                    self._step(instance, now)
                except Exception:  # noqa: BLE001 (keep watching the others)
                    logger.exception("emulator: %s", instance.id)

    def _step(self, instance: Instance, now: float) -> None:
        if instance.ended:
            if instance.alive and instance.kill_at is not None and now >= instance.kill_at:
                self._kill(instance, signal.SIGKILL)
            self._reap(instance)
            return
        if instance.process is None:
            if now >= instance.boot_at and instance.command:
                self._start(instance)
            return
        if instance.interrupt_at is not None and now >= instance.interrupt_at:
            self._kill(instance, signal.SIGKILL)
            self._end(instance, "spot interruption: terminated")
            return
        if not instance.alive:
            instance.exit_code = instance.process.returncode
            self._end(instance, f"the node agent exited ({instance.exit_code}): powering off")

    def _reap(self, instance: Instance) -> None:
        if instance.process is not None and instance.process.poll() is not None:
            instance.exit_code = instance.process.returncode

    @staticmethod
    def _kill(instance: Instance, sig: int) -> None:
        if instance.process is None or instance.process.poll() is not None:
            return
        try:
            os.killpg(instance.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig == signal.SIGKILL:
            try:
                instance.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _console(instance: Instance, line: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
        with instance.log.open("a") as out:
            out.write(f"[emulator {stamp}] {line}\n")


def _user_data(vm: Any) -> str:
    """moto keeps user-data base64-encoded, in one of a few shapes."""
    raw = vm.user_data
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    if raw is None:
        return ""
    if hasattr(raw, "decode") and not isinstance(raw, bytes):
        return raw.decode()
    if isinstance(raw, bytes):
        raw = raw.decode()
    return base64.b64decode(raw).decode(errors="replace")
