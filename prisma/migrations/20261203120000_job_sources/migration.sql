-- A job may start from a checkpoint of another job or from an adapter (POST /v1/jobs fromCheckpoint / fromAdapter).
ALTER TABLE "Job" ADD COLUMN "fromCheckpointJobId" UUID;
ALTER TABLE "Job" ADD COLUMN "fromCheckpointStep" INTEGER;
ALTER TABLE "Job" ADD COLUMN "fromAdapterId" UUID;
