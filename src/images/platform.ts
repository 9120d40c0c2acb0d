import { arch } from 'node:os';

/** This host's architecture in Go's (and the image platform's) words. */
export function goArch(): string {
  return ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[arch()] ?? arch();
}
