import { any, bool, int, map, slice, str, struct, type GoType } from './gojson.js';

/**
 * The Go types of Docker 20.10's request bodies (api/types, api/types/container, network, mount),
 * as far as berth reads them or clients commonly send them. Struct and type names are Go's, so
 * errors read as Docker's.
 */

const strs = slice(str, '[]string');
const strMap = map(str, 'map[string]string');
const emptyMap = (go: string) => map(any, go);

const resources: Record<string, GoType> = {
  CpuShares: int(), Memory: int(), NanoCpus: int(), CgroupParent: str,
  BlkioWeight: int('uint16'), CpuPeriod: int(), CpuQuota: int(), CpuRealtimePeriod: int(), CpuRealtimeRuntime: int(),
  CpusetCpus: str, CpusetMems: str, KernelMemory: int(), KernelMemoryTCP: int(), MemoryReservation: int(),
  MemorySwap: int(), MemorySwappiness: int(), OomKillDisable: bool, PidsLimit: int(), CpuCount: int(),
  CpuPercent: int(), IOMaximumIOps: int('uint64'), IOMaximumBandwidth: int('uint64'),
  Ulimits: slice(struct('Ulimit', '*units.Ulimit', { Name: str, Hard: int(), Soft: int() }), '[]*units.Ulimit'),
  Devices: slice(struct('DeviceMapping', 'container.DeviceMapping', { PathOnHost: str, PathInContainer: str, CgroupPermissions: str }), '[]container.DeviceMapping'),
  DeviceCgroupRules: strs,
};

const restartPolicy = struct('RestartPolicy', 'container.RestartPolicy', { Name: str, MaximumRetryCount: int('int') });

const mount = struct('Mount', 'mount.Mount', {
  Type: str, Source: str, Target: str, ReadOnly: bool, Consistency: str,
  BindOptions: struct('BindOptions', '*mount.BindOptions', { Propagation: str, NonRecursive: bool }),
  VolumeOptions: struct('VolumeOptions', '*mount.VolumeOptions', {
    NoCopy: bool, Labels: strMap,
    DriverConfig: struct('Driver', '*mount.Driver', { Name: str, Options: strMap }),
  }),
  TmpfsOptions: struct('TmpfsOptions', '*mount.TmpfsOptions', { SizeBytes: int(), Mode: int('uint32') }),
});

const portBinding = struct('PortBinding', 'nat.PortBinding', { HostIp: str, HostPort: str });

export const HOST_CONFIG = struct('HostConfig', '*container.HostConfig', {
  ...resources,
  Binds: strs, ContainerIDFile: str,
  LogConfig: struct('LogConfig', 'container.LogConfig', { Type: str, Config: strMap }),
  NetworkMode: str, PortBindings: map(slice(portBinding, '[]nat.PortBinding'), 'nat.PortMap'),
  RestartPolicy: restartPolicy, AutoRemove: bool, VolumeDriver: str, VolumesFrom: strs,
  CapAdd: strs, CapDrop: strs, CgroupnsMode: str, Dns: strs, DnsOptions: strs, DnsSearch: strs, ExtraHosts: strs,
  GroupAdd: strs, IpcMode: str, Cgroup: str, Links: strs, OomScoreAdj: int('int'), PidMode: str, Privileged: bool,
  PublishAllPorts: bool, ReadonlyRootfs: bool, SecurityOpt: strs, StorageOpt: strMap, Tmpfs: strMap, UTSMode: str,
  UsernsMode: str, ShmSize: int(), Sysctls: strMap, Runtime: str, Isolation: str,
  Mounts: slice(mount, '[]mount.Mount'), MaskedPaths: strs, ReadonlyPaths: strs, Init: bool,
  ConsoleSize: slice(int('int'), '[2]uint'),
});

const healthcheck = struct('HealthConfig', '*container.HealthConfig', {
  Test: strs, Interval: int(), Timeout: int(), StartPeriod: int(), Retries: int('int'),
});

const endpointSettings = struct('EndpointSettings', '*network.EndpointSettings', {
  IPAMConfig: struct('EndpointIPAMConfig', '*network.EndpointIPAMConfig', { IPv4Address: str, IPv6Address: str, LinkLocalIPs: strs }),
  Links: strs, Aliases: strs, NetworkID: str, EndpointID: str, Gateway: str, IPAddress: str, IPPrefixLen: int('int'),
  IPv6Gateway: str, GlobalIPv6Address: str, GlobalIPv6PrefixLen: int('int'), MacAddress: str, DriverOpts: strMap,
});

/** ContainerCreate: runconfig.ContainerConfigWrapper, whose *container.Config is embedded. */
export const CONTAINER_CREATE = struct('ContainerConfigWrapper', 'runconfig.ContainerConfigWrapper', {
  Hostname: str, Domainname: str, User: str, AttachStdin: bool, AttachStdout: bool, AttachStderr: bool,
  // Cmd, Entrypoint are strslice.StrSlice, which also takes a single string: left to create.ts.
  ExposedPorts: emptyMap('nat.PortSet'), Tty: bool, OpenStdin: bool, StdinOnce: bool, Env: strs,
  Healthcheck: healthcheck, ArgsEscaped: bool, Image: str, Volumes: emptyMap('map[string]struct {}'), WorkingDir: str,
  NetworkDisabled: bool, MacAddress: str, OnBuild: strs, Labels: strMap, StopSignal: str, StopTimeout: int('int'),
  Shell: strs,
  HostConfig: HOST_CONFIG,
  NetworkingConfig: struct('NetworkingConfig', '*network.NetworkingConfig', {
    EndpointsConfig: map(endpointSettings, 'map[string]*network.EndpointSettings'),
  }),
});

/** POST /containers/{id}/update: container.UpdateConfig (Resources embedded). */
export const CONTAINER_UPDATE = struct('UpdateConfig', 'container.UpdateConfig', { ...resources, RestartPolicy: restartPolicy });

const ipamConfig = struct('IPAMConfig', 'network.IPAMConfig', { Subnet: str, IPRange: str, Gateway: str, AuxiliaryAddresses: strMap });

/** NetworkCreateRequest, with NetworkCreate embedded. */
export const NETWORK_CREATE = struct('NetworkCreateRequest', 'types.NetworkCreateRequest', {
  Name: str, CheckDuplicate: bool, Driver: str, Scope: str, EnableIPv6: bool,
  IPAM: struct('IPAM', '*network.IPAM', { Driver: str, Options: strMap, Config: slice(ipamConfig, '[]network.IPAMConfig') }),
  Internal: bool, Attachable: bool, Ingress: bool, ConfigOnly: bool,
  ConfigFrom: struct('ConfigReference', '*network.ConfigReference', { Network: str }),
  Options: strMap, Labels: strMap,
});

export const NETWORK_CONNECT = struct('NetworkConnect', 'types.NetworkConnect', { Container: str, EndpointConfig: endpointSettings });
export const NETWORK_DISCONNECT = struct('NetworkDisconnect', 'types.NetworkDisconnect', { Container: str, Force: bool });

/** volume.VolumeCreateBody of API 1.41. */
export const VOLUME_CREATE = struct('VolumeCreateBody', 'volume.VolumeCreateBody', { Name: str, Driver: str, DriverOpts: strMap, Labels: strMap });

/** types.ExecConfig */
export const EXEC_CREATE = struct('ExecConfig', 'types.ExecConfig', {
  User: str, Privileged: bool, Tty: bool, AttachStdin: bool, AttachStderr: bool, AttachStdout: bool, Detach: bool,
  DetachKeys: str, Env: strs, WorkingDir: str, Cmd: strs,
});
