-- AlterEnum
ALTER TYPE "JobStatus" ADD VALUE 'paused';

-- AlterTable
ALTER TABLE "Job" ADD COLUMN     "pauseRequestedAt" TIMESTAMP(3);

