// A real S3-protocol server for tests: s3rver on a free local port, serving a fresh bucket
// from a temporary folder. Its environment is what an API or worker process needs to use it.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import S3rver from "s3rver";
import { S3ArtifactStore } from "../../services/common/s3-artifacts.ts";
import { freePort } from "./redis-server.ts";

/** s3rver's fixed credentials. */
const CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export class TestS3 {
  private constructor(
    private readonly server: S3rver,
    private readonly directory: string,
    readonly endpoint: string,
    readonly bucket: string,
  ) {}

  /** `label` names the bucket; each call starts its own server. */
  static async start(label: string): Promise<TestS3> {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), `lora-s3-${label}-`));
    const bucket = `test-${label.toLowerCase().replace(/[^a-z0-9-]/g, "-")}-${randomBytes(3).toString("hex")}`;
    const port = await freePort();
    const server = new S3rver({ address: "127.0.0.1", port, silent: true, directory, configureBuckets: [{ name: bucket }] });
    await server.run();
    return new TestS3(server, directory, `http://127.0.0.1:${port}`, bucket);
  }

  /** The settings an API or worker process needs for this bucket. */
  env(prefix = "artifacts"): Record<string, string> {
    return {
      ARTIFACT_STORE: "s3",
      S3_BUCKET: this.bucket,
      S3_PREFIX: prefix,
      S3_ENDPOINT: this.endpoint,
      S3_REGION: "us-east-1",
      S3_FORCE_PATH_STYLE: "true",
      AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    };
  }

  /** A store on this bucket with its own local cache folder. */
  store(dataDir: string, prefix = "artifacts"): S3ArtifactStore {
    return new S3ArtifactStore(dataDir, { bucket: this.bucket, prefix, endpoint: this.endpoint, region: "us-east-1", forcePathStyle: true, credentials: CREDENTIALS });
  }

  async stop(): Promise<void> {
    await this.server.close();
    await fs.rm(this.directory, { recursive: true, force: true });
  }
}
