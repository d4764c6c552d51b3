// Cancelling, pausing and resuming a job through our own API: pause = checkpoint and release the
// worker, resume = queue it again from that checkpoint. The rules are in job-actions.ts, shared with the
// OpenAI-compatible routes.
import type { FastifyInstance } from "fastify";
import { cancelJob, pauseJob, resumeJob, type JobActionDeps } from "../job-actions.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";
import { jobView } from "../job-view.ts";

export async function jobControlRoutes(app: FastifyInstance, deps: JobActionDeps): Promise<void> {
  app.post(
    "/v1/jobs/:id/cancel",
    {
      schema: {
        tags: ["jobs"],
        summary: "Cancel a job",
        description: "200: a queued or paused job is cancelled at once. 202: a running job is `cancelling` until its worker stops. 409: the job has finished.",
        params: uuidParams,
        response: { 200: { $ref: "Job#" }, 202: { $ref: "Job#" }, ...errorResponses(400, 401, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      const { job, immediate } = await cancelJob(deps, tenantOf(request), (request.params as { id: string }).id, request.log);
      return reply.code(immediate ? 200 : 202).send(jobView(job));
    },
  );

  app.post(
    "/v1/jobs/:id/pause",
    {
      schema: {
        tags: ["jobs"],
        summary: "Pause a job: checkpoint it and release its worker",
        description:
          "200: a queued job is `paused` at once (or was paused already). 202: a running job keeps `running` with `pauseRequestedAt` until its worker has saved a checkpoint and marked it `paused`. 409: `job_cancelling`, `job_finished`.",
        params: uuidParams,
        response: { 200: { $ref: "Job#" }, 202: { $ref: "Job#" }, ...errorResponses(400, 401, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      const { job, immediate } = await pauseJob(deps, tenantOf(request), (request.params as { id: string }).id, request.log);
      return reply.code(immediate ? 200 : 202).send(jobView(job));
    },
  );

  app.post(
    "/v1/jobs/:id/resume",
    {
      schema: {
        tags: ["jobs"],
        summary: "Resume a paused job from its newest checkpoint",
        description:
          "200: a paused job is `queued` again and continues from its newest checkpoint; a running job asked to pause is asked no longer. 409: `job_not_paused`, `job_cancelling`, `job_finished`.",
        params: uuidParams,
        response: { 200: { $ref: "Job#" }, ...errorResponses(400, 401, 404, 409, 429) },
      },
    },
    async (request) => jobView(await resumeJob(deps, tenantOf(request), (request.params as { id: string }).id, request.log)),
  );
}
