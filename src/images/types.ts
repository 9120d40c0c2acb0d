import type { Readable, Writable } from 'node:stream';

/** The container config part of a Docker/OCI image config ("config" in the image JSON). */
export interface ImageRuntimeConfig {
  User?: string;
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  WorkingDir?: string;
  ExposedPorts?: Record<string, object> | null;
  Volumes?: Record<string, object> | null;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
  /** Set by the Dockerfile SHELL instruction: the shell form's interpreter. */
  Shell?: string[];
  /** HEALTHCHECK: Test is ["NONE"], ["CMD", …] or ["CMD-SHELL", cmd]; durations in nanoseconds. */
  Healthcheck?: { Test: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; Retries?: number };
  /** ONBUILD triggers, run when another build starts FROM this image. */
  OnBuild?: string[] | null;
}

/** The image config JSON as stored in registries and archives; its sha256 is the image id. */
export interface ImageConfigFile {
  architecture: string;
  os: string;
  created?: string;
  author?: string;
  comment?: string;
  config?: ImageRuntimeConfig;
  container_config?: ImageRuntimeConfig;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: Array<{ created?: string; created_by?: string; comment?: string; empty_layer?: boolean }>;
}

export interface ImageRecord {
  /** "sha256:<64 hex>", the digest of the config JSON bytes. */
  id: string;
  /** Normalised "name:tag" references, e.g. "busybox:latest", "localhost:5000/app:1". */
  repoTags: string[];
  repoDigests: string[];
  config: ImageConfigFile;
  /** Sum of the uncompressed layer sizes in bytes. */
  size: number;
  /** When the image was added to this store (ISO 8601), used when config.created is absent. */
  added: string;
}

export interface RemovedImageItem { Untagged?: string; Deleted?: string }

/** A container that uses an image (a running one when there is one: Docker names it first). */
export interface ImageUser { id: string; running: boolean }

/**
 * What makes new images out of layers: `commit` and the builder. The path from scratchPath is
 * inside the store's own temporary directory (emptied on start), so a layer written there and
 * moved in by addLayer never crosses filesystems and never outlives a crash.
 */
export interface ImageWriter {
  /** A fresh path in the store's temporary directory (nothing is created there). */
  scratchPath(prefix: string): string;
  /** Adds a layer tarball (plain or compressed) and returns its diff id; expectedDiffId is checked when given. */
  addLayer(path: string, expectedDiffId?: string): Promise<string>;
  /** Stores a config whose layers are all stored already as an image, and tags it. */
  commitImage(configBytes: Buffer, tags: string[], repoDigests?: string[]): Promise<ImageRecord>;
}

/** The builder's step cache, kept in the image index so that it never names a removed image. */
export interface BuildCache {
  /** Records a build step's image: its parent (which hides the parent as intermediate) and cache key. */
  recordBuildStep(id: string, parent: string | undefined, key: string): Promise<void>;
  buildCacheLookup(key: string): ImageRecord | undefined;
}

/**
 * The local image store. All methods that take a reference accept what Docker accepts: a name with
 * optional tag ("busybox", "busybox:latest", "docker.io/library/busybox"), a full id ("sha256:…"),
 * a bare hex id, or an unambiguous id prefix. Unknown references throw NotFoundError with Docker's
 * wording ("No such image: busybox:latest").
 */
export interface ImageStore extends ImageWriter, BuildCache {
  /** Loads the store from disk, removing leftovers of interrupted writes. */
  init(): Promise<void>;
  list(): ImageRecord[];
  /** Returns undefined when nothing matches; throws BadRequestError for a malformed reference. */
  find(ref: string): ImageRecord | undefined;
  /** Like find, but throws NotFoundError("No such image: REF"). */
  get(ref: string): ImageRecord;
  /**
   * Imports a root filesystem tarball (plain or gzip/bzip2/xz compressed) as a one-layer image,
   * like `docker import`. changes are Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR,
   * EXPOSE, LABEL, USER, VOLUME) applied to the image config.
   */
  importRootfs(tar: Readable, opts: { repoTag?: string; changes?: string[]; message?: string; platform?: string }): Promise<ImageRecord>;
  /**
   * Loads a docker-archive (manifest.json) or OCI image layout (index.json) tarball, as
   * `docker load` does. Returns one line per image as docker prints them:
   * "Loaded image: busybox:latest" or "Loaded image ID: sha256:…".
   */
  load(tar: Readable): Promise<string[]>;
  /** Writes a docker-archive tarball (which also carries an OCI layout index) of the given images. */
  save(refs: string[], out: Writable): Promise<void>;
  /** Adds repo:tag to an image, moving the tag away from any other image that held it. */
  tag(ref: string, repo: string, tag?: string): Promise<void>;
  /**
   * Removes a tag or an image as `docker rmi` does (daemon/images/image_delete.go), with Docker's
   * conflicts and words: a tag that is the image's last while a container uses it (must force); by
   * id: child images and running containers (cannot be forced), several tags or a stopped container
   * (must be forced). Untagged parents left dangling go too, unless noprune. One difference: an
   * image a container uses is never deleted (its containers start from its layers); `-f` then only
   * untags it, where Docker would delete it and keep its layers under the container.
   */
  remove(ref: string, opts: { force?: boolean; noprune?: boolean }, isUsed: (imageId: string) => ImageUser | undefined): Promise<RemovedImageItem[]>;
  /** Removes dangling (untagged) images not used by containers; all=true removes every unused image. */
  prune(opts: { all?: boolean }, isUsed: (imageId: string) => ImageUser | undefined): Promise<{ ImagesDeleted: RemovedImageItem[]; SpaceReclaimed: number }>;
  /** Unpacked layer directories for overlayfs lowerdir, topmost layer first. */
  layerDirs(image: ImageRecord): string[];
  /** GET /images/{name}/json body. */
  inspect(image: ImageRecord): object;
  /** GET /images/json body entries. */
  /** all=false hides intermediate images (untagged parents of built images), as `docker images` does. */
  summaries(all?: boolean): object[];
}
