-- AlterTable
ALTER TABLE "Job" ADD COLUMN     "suffix" TEXT;

