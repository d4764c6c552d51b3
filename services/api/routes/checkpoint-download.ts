// Every kept checkpoint of a job as a PEFT adapter: the same tar.gz a finished adapter downloads
// as (adapter_config.json, adapter_model.safetensors, metrics.json), without the optimizer state
// that only resuming needs. Usable while the job runs, is paused, or after it finished.
import type { FastifyInstance } from "fastify";
import type { ArtifactStore } from "../../common/artifacts.ts";
import { checkpointArchive } from "../../common/adapter-archive.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError, notFound } from "../../common/errors.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses } from "../schemas.ts";

const params = {
  type: "object",
  required: ["id", "step"],
  additionalProperties: false,
  properties: { id: { type: "string", format: "uuid" }, step: { type: "string", pattern: "^[0-9]{1,9}$" } },
} as const;

/** Where a checkpoint downloads from, for the views that list checkpoints. */
export const checkpointDownloadPath = (jobId: string, step: number) => `/v1/jobs/${jobId}/checkpoints/${step}/download`;

export async function checkpointDownloadRoutes(app: FastifyInstance, deps: { prisma: PrismaClient; store: ArtifactStore }): Promise<void> {
  app.get(
    "/v1/jobs/:id/checkpoints/:step/download",
    {
      schema: {
        tags: ["jobs"],
        summary: "A checkpoint's PEFT adapter as tar.gz",
        params,
        produces: ["application/gzip"],
        response: { 200: { type: "string", format: "binary" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request, reply) => {
      const { id, step: stepText } = request.params as { id: string; step: string };
      const step = Number(stepText);
      const job = await deps.prisma.job.findFirst({ where: { id, tenantId: tenantOf(request) }, select: { id: true } });
      if (!job) throw notFound("job", id);
      const checkpoint = await deps.prisma.checkpoint.findUnique({ where: { jobId_step: { jobId: id, step } } });
      if (!checkpoint) throw new AppError(404, "not_found", `job ${id} has no checkpoint at step ${step}`);
      // A local copy of the folder (with S3, downloaded into DATA_DIR first).
      const folder = (await deps.store.exists(checkpoint.storageKey)) ? await deps.store.fetch(checkpoint.storageKey) : undefined;
      const archive = folder ? await checkpointArchive(folder) : undefined;
      if (!archive) throw new AppError(404, "checkpoint_gone", `the files of the checkpoint at step ${step} are gone (a cancelled or failed job's checkpoints are removed)`);
      return reply
        .type("application/gzip")
        .header("content-disposition", `attachment; filename="checkpoint-${id}-step-${step}.tar.gz"`)
        .send(archive);
    },
  );
}
