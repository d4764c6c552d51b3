// Opens the artifact store the configuration names (ARTIFACT_STORE), so processes and
// tools never choose between the filesystem and S3 themselves.
import { FsArtifactStore, type ArtifactStore } from "./artifacts.ts";
import type { Config } from "./config.ts";
import { S3ArtifactStore } from "./s3-artifacts.ts";

export function openArtifactStore(config: Config): ArtifactStore {
  if (config.artifactStore === "fs") return new FsArtifactStore(config.dataDir);
  return new S3ArtifactStore(config.dataDir, {
    bucket: config.s3Bucket,
    prefix: config.s3Prefix,
    endpoint: config.s3Endpoint,
    region: config.s3Region,
    forcePathStyle: config.s3ForcePathStyle,
  });
}
