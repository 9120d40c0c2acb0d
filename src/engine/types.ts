import type { Health, HealthConfig } from './health.js';
import type { EndpointState, PortMapping } from '../model/network.js';

/** Container data as berth persists it. Field names follow Docker's inspect JSON, so the API layer
 *  maps it with little translation and clients see familiar shapes. */

export interface ContainerConfig {
  Hostname: string;
  Domainname: string;
  User: string;
  AttachStdin: boolean;
  AttachStdout: boolean;
  AttachStderr: boolean;
  ExposedPorts?: Record<string, object> | null;
  Tty: boolean;
  OpenStdin: boolean;
  StdinOnce: boolean;
  Env: string[];
  Cmd: string[] | null;
  Image: string;
  Volumes: Record<string, object> | null;
  WorkingDir: string;
  Entrypoint: string[] | null;
  OnBuild: string[] | null;
  Labels: Record<string, string>;
  StopSignal?: string;
  StopTimeout?: number;
  Healthcheck?: HealthConfig;
}

export interface RestartPolicy { Name: string; MaximumRetryCount: number }

export interface HostConfig {
  NetworkMode: string;
  AutoRemove: boolean;
  Privileged: boolean;
  CapAdd: string[] | null;
  CapDrop: string[] | null;
  Dns: string[];
  DnsSearch: string[];
  DnsOptions: string[];
  ExtraHosts: string[] | null;
  Links: string[] | null;
  PortBindings: Record<string, Array<{ HostIp: string; HostPort: string }> | null>;
  PublishAllPorts: boolean;
  RestartPolicy: RestartPolicy;
  ReadonlyRootfs: boolean;
  Binds: string[] | null;
  LogConfig: { Type: string; Config: Record<string, string> };
  [key: string]: unknown;
}

export type ContainerStatus = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';

export interface ContainerState {
  Status: ContainerStatus;
  Running: boolean;
  Paused: boolean;
  Restarting: boolean;
  OOMKilled: boolean;
  Dead: boolean;
  Pid: number;
  ExitCode: number;
  Error: string;
  StartedAt: string;
  FinishedAt: string;
  /** Only for containers with a health check, as in Docker's inspect. */
  Health?: Health;
}

export interface ContainerRecord {
  Id: string;
  Created: string;
  Path: string;
  Args: string[];
  Name: string;
  /** The image id ("sha256:…") the container was created from. */
  Image: string;
  Config: ContainerConfig;
  HostConfig: HostConfig;
  NetworkingConfig: { EndpointsConfig: Record<string, unknown> };
  State: ContainerState;
  RestartCount: number;
  /** Set by `docker stop`/`kill` so a restart policy does not bring the container back. */
  ManuallyStopped: boolean;
  /** Network namespace pinned for the current run; empty when stopped or in host mode. */
  NetnsPath: string;
  /** The networks the container belongs to, by network id. */
  Endpoints?: Record<string, EndpointState>;
  /** Host ports published for the current run. */
  Published?: PortMapping[];
  /** Destination → name of the anonymous volumes made for this container (`-v /path`, VOLUME). */
  AnonymousVolumes?: Record<string, string>;
}

export const ZERO_TIME = '0001-01-01T00:00:00Z';
