"""The Docker SDK for Python (Debian's python3-docker 5.0.3) against berthd, as its users call it:
the high-level models and the low-level APIClient, for containers, networks, volumes, images,
exec, logs, events, and the cleanup paths scripts and test suites run (prune, remove of what is
gone, swarm leave). Every step prints "STEP name" and the script ends with "ALL OK", so the
calling test can tell which step failed and that all of them ran.

Usage: python3 docker_sdk.py unix:///path/to/berth.sock PREFIX
"""
import io
import sys
import tarfile
import time

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import IPAMConfig, IPAMPool

base_url, prefix = sys.argv[1], sys.argv[2]
client = docker.DockerClient(base_url=base_url, version='auto', timeout=60)
api = client.api


def step(name):
    print('STEP', name, flush=True)


def expect_error(cls, fn, status=None, words=None):
    try:
        fn()
    except cls as e:
        if status is not None:
            assert e.status_code == status, (e.status_code, str(e))
        if words is not None:
            assert words in str(e.explanation), (words, e.explanation)
        return e
    raise AssertionError('no %s raised' % cls.__name__)


t0 = int(time.time())

step('system')
assert client.ping() is True
assert api.api_version == '1.41', api.api_version
assert client.version()['ApiVersion'] == '1.41'
assert client.info()['Swarm']['LocalNodeState'] == 'inactive'
df = client.df()
assert 'Images' in df and 'Containers' in df and 'Volumes' in df

step('swarm-cleanup')
# Cleanup code of test suites: leave with force is "done" on 503; without force it raises.
assert api.leave_swarm(force=True) is True
expect_error(APIError, lambda: client.swarm.leave(), 503, 'This node is not part of a swarm')
expect_error(APIError, lambda: client.services.list(), 503, 'not a swarm manager')

step('images')
img = client.images.get('busybox')
assert any(t.startswith('busybox') for t in img.tags), img.tags
assert img.tag('%s-img' % prefix, 'v1') is True
assert client.images.get('%s-img:v1' % prefix).id == img.id
assert any(t == '%s-img:v1' % prefix for i in client.images.list(name='%s-img' % prefix) for t in i.tags)
history = img.history()
assert isinstance(history, list) and history
saved = b''.join(client.images.get('%s-img:v1' % prefix).save(named='%s-img:v1' % prefix))
client.images.remove('%s-img:v1' % prefix)
expect_error(ImageNotFound, lambda: client.images.get('%s-img:v1' % prefix), 404)
loaded = client.images.load(saved)
assert loaded and loaded[0].id == img.id, loaded
client.images.remove('%s-img:v1' % prefix)

step('volumes')
vol = client.volumes.create('%s-vol' % prefix, labels={'sdk': prefix})
assert vol.attrs['Driver'] == 'local' and vol.attrs['Labels'] == {'sdk': prefix}
assert [v.name for v in client.volumes.list(filters={'label': 'sdk=%s' % prefix})] == ['%s-vol' % prefix]
expect_error(NotFound, lambda: client.volumes.get('%s-nosuchvol' % prefix), 404)

step('networks')
net = client.networks.create(
    '%s-net' % prefix, driver='bridge', check_duplicate=True, labels={'sdk': prefix},
    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet='172.31.77.0/24', gateway='172.31.77.1')]))
assert net.attrs['IPAM']['Config'][0]['Subnet'] == '172.31.77.0/24'
expect_error(APIError, lambda: client.networks.create('%s-net' % prefix, check_duplicate=True), 409)
assert [n.name for n in client.networks.list(names=['%s-net' % prefix])] == ['%s-net' % prefix]
expect_error(NotFound, lambda: client.networks.get('%s-nosuchnet' % prefix), 404)

step('containers-run')
out = client.containers.run('busybox', ['sh', '-c', 'echo out; echo err >&2'], remove=True, stderr=True)
assert out == b'out\nerr\n', out
expect_error(docker.errors.ContainerError, lambda: client.containers.run('busybox', ['sh', '-c', 'exit 3'], remove=True))

step('containers-detached')
c = client.containers.run(
    'busybox', ['sh', '-c', 'echo started; i=0; while true; do i=$((i+1)); echo line$i; sleep 0.2; done'],
    name='%s-c1' % prefix, detach=True, labels={'sdk': prefix}, environment={'SDK': prefix},
    volumes={'%s-vol' % prefix: {'bind': '/data', 'mode': 'rw'}}, network='%s-net' % prefix,
    ports={'80/tcp': None}, mem_limit='64m')
c.reload()
assert c.status == 'running', c.status
assert c.attrs['HostConfig']['Memory'] == 64 * 1024 * 1024
assert 'SDK=%s' % prefix in c.attrs['Config']['Env']
assert c.attrs['NetworkSettings']['Networks']['%s-net' % prefix]['IPAddress'].startswith('172.31.77.')
assert c.ports.get('80/tcp'), c.ports
assert [x.name for x in client.containers.list(filters={'label': 'sdk=%s' % prefix})] == ['%s-c1' % prefix]
top = c.top()
assert top['Titles'] and top['Processes']
stats = c.stats(stream=False)
assert 'memory_stats' in stats and 'cpu_stats' in stats

step('exec')
r = c.exec_run(['sh', '-c', 'echo $SDK; echo e >&2; exit 4'], demux=True)
assert r.exit_code == 4, r
assert r.output == (('%s\n' % prefix).encode(), b'e\n'), r.output
r = c.exec_run('cat /proc/1/cmdline', user='nobody', workdir='/tmp', environment={'X': '1'})
assert r.exit_code == 0 and b'while true' in r.output, r
exec_id = api.exec_create(c.id, ['sleep', '0'])['Id']
api.exec_start(exec_id)
assert api.exec_inspect(exec_id)['ExitCode'] == 0

step('logs')
deadline = time.time() + 10
while b'line3' not in c.logs() and time.time() < deadline:
    time.sleep(0.1)
logs = c.logs(stdout=True, stderr=True)
assert logs.startswith(b'started\nline1\n'), logs[:50]
assert c.logs(tail=1).count(b'\n') == 1
stamped = c.logs(timestamps=True, tail=2).decode()
assert stamped.split(' ')[0].endswith('Z'), stamped
stream = c.logs(stream=True, follow=True, tail=0)
got = b''
for chunk in stream:
    got += chunk
    if got.count(b'\n') >= 2:
        break
stream.close()
assert got.startswith(b'line'), got

step('network-connect')
c2 = client.containers.create('busybox', ['sleep', '300'], name='%s-c2' % prefix, labels={'sdk': prefix})
net.connect(c2, aliases=['%s-alias' % prefix])
c2.start()
r = c2.exec_run(['nslookup', '%s-c1' % prefix, '127.0.0.11'])
assert r.exit_code == 0 and b'172.31.77.' in r.output, r.output
net.reload()
assert sorted(x.name for x in net.containers) == sorted(['%s-c1' % prefix, '%s-c2' % prefix])
net.disconnect(c2, force=True)
net.reload()
assert [x.name for x in net.containers] == ['%s-c1' % prefix]
expect_error(APIError, lambda: net.remove(), 403, 'active endpoints')

step('lifecycle')
c2.pause()
c2.reload()
assert c2.status == 'paused'
c2.unpause()
c2.rename('%s-c2b' % prefix)
assert client.containers.get('%s-c2b' % prefix).id == c2.id
c2.update(mem_limit='32m', memswap_limit='-1')
c2.kill()
assert c2.wait(timeout=10)['StatusCode'] == 137
c.stop(timeout=1)
assert c.wait(timeout=10)['StatusCode'] in (137, 143)
expect_error(APIError, lambda: client.containers.create('busybox', name='%s-c1' % prefix), 409)

step('archive')
bits, st = c.get_archive('/etc/hostname')
assert st['name'] == 'hostname'
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w') as tf:
    data = b'hello sdk\n'
    info = tarfile.TarInfo('sdk.txt')
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
assert c.put_archive('/tmp', buf.getvalue()) is True

step('events')
t1 = int(time.time()) + 1
seen = set()
for ev in client.events(since=t0, until=t1, decode=True, filters={'label': 'sdk=%s' % prefix}):
    if ev.get('Type') == 'container':
        seen.add(ev['Action'].split(':')[0])
for action in ('create', 'start', 'exec_create', 'exec_start', 'exec_die', 'pause', 'unpause', 'rename', 'kill', 'die', 'stop'):
    assert action in seen, (action, sorted(seen))

step('cleanup')
c.remove(v=True)
c2.remove(force=True)
expect_error(NotFound, lambda: api.remove_container('%s-c1' % prefix, force=True), 404)
pruned = client.containers.prune(filters={'label': 'sdk=%s' % prefix})
assert pruned['ContainersDeleted'] is None, pruned
net.remove()
assert client.networks.prune(filters={'label': 'sdk=%s' % prefix})['NetworksDeleted'] is None
vol.remove()
assert client.volumes.prune(filters={'label': 'sdk=%s' % prefix})['VolumesDeleted'] is None
client.images.prune(filters={'dangling': True})
client.close()
print('ALL OK', flush=True)
