"""A fakepve cluster for Phoenix's tests, with a loopback control endpoint.

    .venv-fakepve/bin/python hack/fakepve/harness.py --workdir DIR [--nodes pve1,pve2] [--time-scale 0.01]

Starts fakepve (https, 127.0.0.1, a port chosen by the system) with what the seeds' estate has:
storage `quickOS-lxc-disks` (ZFS, images and containers), `local` holding the Debian 12
container template, `local-lvm`, and the nodes asked for. It makes a CA and a server certificate
signed by it (in --workdir), a random root@pam password and an API token `root@pam!phoenix`, and
prints one JSON line on stdout with everything a client needs:

    {"url", "host", "port", "node", "nodes", "user", "password", "token_id", "token_secret",
     "ca_file", "cert_file", "fingerprint", "control", "template", "storage", "fakepve_version"}

`control` is a plain-HTTP endpoint on 127.0.0.1 through which tests inject PVE's faults:

    POST /call      {"name": "hold_config_lock", "args": [100, 30], "kwargs": {}}
                    any of CALLS below, on the fake itself; answers {"result": ...}
    POST /set       {"attr": "time_scale", "value": 0.01}          one of SETTABLE
    POST /guest     {"vmid": 100, "attr": "start_error", "value": "boom"}   one of GUEST_SETTABLE
    GET  /guest?vmid=100     the guest's node, type, status, lock, config, pending (404: none)
    GET  /requests?since=N   requests seen since the Nth: {"total", "requests": [[method, path]]}
    GET  /tasks              every task: upid, type, id, node, status, exitstatus
    POST /clear_failures     forget every pve.fail() rule

Besides fakepve's own faults the harness models PVE's storage lock (`storage_lock`, off until
set): allocating a container's or VM's volumes at create takes the lock of each storage
(`/var/lock/pve-manager/pve-storage-<id>`) for `alloc_secs` PVE seconds, and a create task that
waits longer than `wait` PVE seconds for it fails with PVE's "can't lock file ... - got timeout".
That is how parallel creates on one storage fail on a real node.

It stops on SIGTERM or SIGINT, and when its stdin closes (the test that started it is gone).
"""

import argparse
import asyncio
import contextvars
import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets
import signal
import sys
from importlib import metadata

from aiohttp import web

from fakepve import FakePve, TaskError
from fakepve.lxc import FakeCt

TEMPLATE_STORAGE = 'local'
TEMPLATE_NAME = 'debian-12-standard_12.2-1_amd64.tar.zst'
TEMPLATE = '{0}:vztmpl/{1}'.format(TEMPLATE_STORAGE, TEMPLATE_NAME)
GUEST_STORAGE = 'quickOS-lxc-disks'
TOKEN_ID = 'root@pam!phoenix'

# Methods of the fake a test may call through POST /call.
CALLS = frozenset((
    'hold_config_lock', 'release_config_lock', 'fail', 'flaky_network', 'slow_network',
    'set_node_offline', 'lose_quorum', 'regain_quorum', 'revoke_tickets', 'migrate', 'backup',
    'snapshot_lock', 'unlock', 'add_node', 'add_ct', 'add_vm', 'store_file', 'ceph_slow',
    'ceph_down', 'ceph_recover', 'add_ceph_storage', 'issue_ticket',
))
# Attributes of the fake a test may set through POST /set.
SETTABLE = frozenset((
    'time_scale', 'lock_wait', 'ticket_ttl', 'shutdown_default_timeout', 'ha_delay', 'tfa',
    'ct_secs', 'storage_lock',
))
# Attributes of a guest a test may set through POST /guest.
GUEST_SETTABLE = frozenset((
    'start_error', 'start_secs', 'stop_secs', 'shutdown_secs', 'acpi', 'agent', 'ha_state', 'stats',
))

# The storages the create being handled allocates on (set around the create, read by task()).
_CREATE_STORAGES = contextvars.ContextVar('create_storages', default=None)
_VOLUME = re.compile(r'^(?:volume=)?([A-Za-z][A-Za-z0-9\-_.]*[A-Za-z0-9]):')


class HarnessPve(FakePve):
    """FakePve plus PVE's storage lock around volume allocation at create."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # None (off), or {'alloc_secs': PVE seconds the lock is held, 'wait': PVE seconds to wait}.
        self.storage_lock = None
        self._storage_locks = {}
        self.requests_total = 0
        self.max_requests = 1000000

    def _record(self, request, body):
        self.requests_total += 1
        super()._record(request, body)

    @staticmethod
    def _mount_storages(values, default):
        found = []
        for key, value in values.items():
            if not (key == 'rootfs' or re.fullmatch(r'(mp|scsi|virtio|sata|ide|efidisk|tpmstate)\d+', key)):
                continue
            text = str(value)
            if 'media=cdrom' in text:
                continue
            if re.fullmatch(r'\d+(\.\d+)?', text):
                sid = default
            else:
                match = _VOLUME.match(text.split(',')[0] if not text.startswith('volume=') else text)
                sid = match.group(1) if match else None
            if sid and sid not in found:
                found.append(sid)
        if not found and default:
            found.append(default)
        return found

    async def _lxc_create(self, user, v):
        token = _CREATE_STORAGES.set(self._mount_storages(v, v.get('storage') or 'local'))
        try:
            return await super()._lxc_create(user, v)
        finally:
            _CREATE_STORAGES.reset(token)

    async def _qm_create(self, v, user):
        token = _CREATE_STORAGES.set(self._mount_storages(v, None))
        try:
            return await super()._qm_create(v, user)
        finally:
            _CREATE_STORAGES.reset(token)

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        sids = _CREATE_STORAGES.get()
        if self.storage_lock and sids and ttype in ('vzcreate', 'qmcreate'):
            body = self._with_storage_locks(body, sids, ttype, tid, vm)
        return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)

    def _with_storage_locks(self, body, sids, ttype, vmid, guest):
        settings = dict(self.storage_lock)

        async def wrapped():
            held = []
            try:
                for sid in sorted(sids):
                    lock = self._storage_locks.setdefault(sid, asyncio.Lock())
                    wait = float(settings.get('wait', 10)) * (self.time_scale or 0)
                    try:
                        if wait > 0:
                            await asyncio.wait_for(lock.acquire(), wait)
                        elif lock.locked():
                            raise asyncio.TimeoutError()
                        else:
                            await lock.acquire()
                    except asyncio.TimeoutError:
                        raise TaskError("can't lock file '/var/lock/pve-manager/pve-storage-{0}' - got timeout"
                                        .format(sid)) from None
                    held.append(lock)
                await self.pause(float(settings.get('alloc_secs', 1)))
            except TaskError as e:
                # PVE removes the half-made guest when its create fails.
                self._forget(guest)
                kind = 'CT' if ttype == 'vzcreate' else 'VM'
                raise TaskError('unable to create {0} {1} - {2}'.format(kind, vmid, e)) from e
            finally:
                for lock in held:
                    lock.release()
            return await body()
        return wrapped

    def _forget(self, guest):
        if guest is None:
            return
        if isinstance(guest, FakeCt):
            if guest in self.cts:
                self.cts.remove(guest)
        elif guest in self.vms:
            self.vms.remove(guest)


def make_pki(workdir, host):
    """A CA and a server certificate it signs (names localhost, 127.0.0.1 and host); returns
    (ca_file, cert_file, key_file, sha256 fingerprint of the server certificate as PVE shows it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'fakepve test CA')])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]
    try:
        extra = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if extra not in names:
        names.append(extra)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'pve1')]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = os.path.join(workdir, 'pve-root-ca.pem')
    cert_file = os.path.join(workdir, 'pve-ssl.pem')
    key_file = os.path.join(workdir, 'pve-ssl.key')
    with open(ca_file, 'wb') as out:
        out.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_file, 'wb') as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'wb') as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    fingerprint = ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))
    return ca_file, cert_file, key_file, fingerprint


def seed(pve, nodes):
    """The seeds' storages and template, and the nodes."""
    for name in nodes:
        pve.add_node(name)
    pve.storages[GUEST_STORAGE] = {'type': 'zfspool', 'pool': 'quickOS/lxc-disks', 'content': 'images,rootdir',
                                   'sparse': 1, 'active': 1, 'files': set()}
    pve.store_file(TEMPLATE_STORAGE, TEMPLATE_NAME, 126 * 1024 ** 2, content='vztmpl')


def jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return None


def guest_view(guest):
    return {'vmid': guest.vmid, 'node': guest.node, 'type': 'lxc' if isinstance(guest, FakeCt) else 'qemu',
            'status': guest.status, 'lock': guest.lock, 'config': jsonable(dict(guest.config)),
            'pending': jsonable(dict(guest.pending))}


def control_app(pve):
    async def body(request):
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='body is not JSON')
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='body is not a JSON object')
        return data

    async def call(request):
        data = await body(request)
        name = data.get('name')
        if name not in CALLS:
            raise web.HTTPBadRequest(text='unknown call {0!r}; known: {1}'.format(name, ', '.join(sorted(CALLS))))
        try:
            result = getattr(pve, name)(*data.get('args', []), **data.get('kwargs', {}))
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - the test wants to know why
            raise web.HTTPBadRequest(text='{0}: {1}'.format(type(exc).__name__, exc))
        return web.json_response({'result': jsonable(result)})

    async def set_attr(request):
        data = await body(request)
        attr = data.get('attr')
        if attr not in SETTABLE:
            raise web.HTTPBadRequest(text='unknown attribute {0!r}'.format(attr))
        value = data.get('value')
        if attr == 'ct_secs':
            pve.ct_secs.update(value or {})
        else:
            setattr(pve, attr, value)
        return web.json_response({'result': None})

    async def set_guest(request):
        data = await body(request)
        guest = pve.guest(int(data.get('vmid', 0)))
        if guest is None:
            raise web.HTTPNotFound(text='no guest {0}'.format(data.get('vmid')))
        attr = data.get('attr')
        if attr not in GUEST_SETTABLE:
            raise web.HTTPBadRequest(text='unknown guest attribute {0!r}'.format(attr))
        setattr(guest, attr, data.get('value'))
        return web.json_response({'result': None})

    async def get_guest(request):
        guest = pve.guest(int(request.query.get('vmid', '0')))
        if guest is None:
            raise web.HTTPNotFound(text='no guest {0}'.format(request.query.get('vmid')))
        return web.json_response(guest_view(guest))

    async def requests(request):
        since = int(request.query.get('since', '0'))
        kept = pve.requests
        first = pve.requests_total - len(kept)
        items = [[m, p] for m, p, _ in kept[max(since - first, 0):]]
        return web.json_response({'total': pve.requests_total, 'requests': items})

    async def tasks(request):
        return web.json_response([{k: t.get(k) for k in ('upid', 'type', 'id', 'node', 'status', 'exitstatus')}
                                  for t in pve.tasklog])

    async def clear_failures(request):
        pve.failures.clear()
        return web.json_response({'result': None})

    app = web.Application()
    app.router.add_post('/call', call)
    app.router.add_post('/set', set_attr)
    app.router.add_post('/guest', set_guest)
    app.router.add_get('/guest', get_guest)
    app.router.add_get('/requests', requests)
    app.router.add_get('/tasks', tasks)
    app.router.add_post('/clear_failures', clear_failures)
    return app


async def main(args):
    os.makedirs(args.workdir, exist_ok=True)
    nodes = [n for n in args.nodes.split(',') if n]
    password = secrets.token_urlsafe(18)
    token_secret = secrets.token_hex(16)
    pve = HarnessPve(user='root@pam', password=password, host=args.host, port=0)
    pve.nodes = {}
    seed(pve, nodes)
    pve.time_scale = args.time_scale
    pve.apitokens[TOKEN_ID] = token_secret
    ca_file, cert_file, key_file, fingerprint = make_pki(args.workdir, args.host)
    await pve.start(cert_file, key_file)

    runner = web.AppRunner(control_app(pve))
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    control_port = runner.addresses[0][1]

    info = {'url': pve.url, 'host': pve.host, 'port': pve.port, 'node': nodes[0], 'nodes': nodes,
            'user': pve.user, 'password': password, 'token_id': TOKEN_ID, 'token_secret': token_secret,
            'ca_file': ca_file, 'cert_file': cert_file, 'fingerprint': fingerprint,
            'control': 'http://127.0.0.1:{0}'.format(control_port), 'template': TEMPLATE,
            'storage': GUEST_STORAGE, 'fakepve_version': metadata.version('fakepve')}
    print(json.dumps(info), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # stdin closing means the test process is gone: stop with it.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    await stop.wait()
    await runner.cleanup()
    await pve.stop()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', required=True, help='where the CA and server certificate are written')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--nodes', default='pve1,pve2', help='comma-separated node names; the first is the default')
    parser.add_argument('--time-scale', type=float, default=0.01,
                        help='real seconds per PVE second (0: tasks finish before their request returns)')
    return parser.parse_args()


if __name__ == '__main__':
    asyncio.run(main(parse_args()))
