-- The data quality report of each upload, and the preflight report each job was accepted with.
ALTER TABLE "Dataset" ADD COLUMN "qualityReport" JSONB;
ALTER TABLE "Job" ADD COLUMN "qualityReport" JSONB;
