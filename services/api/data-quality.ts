// The data quality preflight of a job submission (both APIs): the training set's report made again
// with the job's model, so examples it would truncate show up in tokens, plus the overlap of the
// validation set with the training set. Findings past the configured thresholds refuse the job with
// 422 data_quality unless the request acknowledges them. Reports are kept per (datasets, model,
// maximum length), so submitting the same data again costs nothing.
import fs from "node:fs/promises";
import path from "node:path";
import { createReadStream } from "node:fs";
import type { ArtifactStore } from "../common/artifacts.ts";
import { AppError } from "../common/errors.ts";
import type { Logger } from "../common/logger.ts";
import { modelKey, type BaseModelInfo } from "../common/models.ts";
import {
  blockingFindings,
  checkRecord,
  DatasetQualityAnalyzer,
  LeakageCheck,
  loadTokenCounter,
  readJsonlLines,
  type DatasetFormat,
  type DatasetRecord,
  type ExampleTokenCounter,
  type QualityReport,
  type QualityThresholds,
} from "../trainer/index.ts";
import type { LiveDataset } from "./job-sql.ts";

const KEPT_REPORTS = 256;
const KEPT_TOKENIZERS = 8;
/** What counting tokens needs of a model folder; the weights stay where they are. */
const TOKENIZER_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json"];

export interface PreflightRequest {
  train: LiveDataset;
  validation: LiveDataset | undefined;
  model: BaseModelInfo;
  /** The job's hyperparameters.maxSeqLength; the model's positions may cap it further. */
  maxSeqLength: number;
}

/** Bounded map, least recently used first out. */
class Recent<V> extends Map<string, V> {
  constructor(private readonly capacity: number) {
    super();
  }

  touch(key: string, make: () => V): V {
    const value = this.has(key) ? this.get(key)! : make();
    this.delete(key);
    this.set(key, value);
    if (this.size > this.capacity) this.delete(this.keys().next().value!);
    return value;
  }
}

export class DataQualityPreflight {
  private readonly reports = new Recent<Promise<QualityReport>>(KEPT_REPORTS);
  private readonly counters = new Recent<Promise<ExampleTokenCounter | undefined>>(KEPT_TOKENIZERS);

  constructor(
    private readonly store: ArtifactStore,
    readonly thresholds: QualityThresholds,
    private readonly logger: Logger,
  ) {}

  /** The job's report; concurrent submissions of the same data share one computation. */
  report(request: PreflightRequest): Promise<QualityReport> {
    const key = [request.train.sha256, request.validation?.sha256 ?? "", request.train.format, request.model.id, request.maxSeqLength].join("/");
    const made = this.reports.touch(key, () => this.make(request));
    made.catch(() => this.reports.get(key) === made && this.reports.delete(key));
    return made;
  }

  /** The upload report of a dataset stored before reports existed, made from its file. */
  async uploadReport(dataset: LiveDataset): Promise<QualityReport> {
    const analyzer = new DatasetQualityAnalyzer(dataset.format as DatasetFormat);
    await this.eachRecord(dataset, (line, record) => analyzer.add(line, record));
    return analyzer.report(this.thresholds);
  }

  private async make({ train, validation, model, maxSeqLength }: PreflightRequest): Promise<QualityReport> {
    const counter = await this.counters.touch(model.id, () => this.tokenCounter(model));
    const tokenCounting = counter && { model: model.id, maxLength: Math.min(maxSeqLength, counter.maxPositions), count: (record: DatasetRecord) => counter.count(record) };
    const analyzer = new DatasetQualityAnalyzer(train.format as DatasetFormat, tokenCounting);
    await this.eachRecord(train, (line, record) => analyzer.add(line, record));
    const report = analyzer.report(this.thresholds);
    if (validation) {
      const leakage = new LeakageCheck(analyzer);
      await this.eachRecord(validation, (line, record) => leakage.add(line, record));
      const finding = leakage.finding(this.thresholds);
      if (finding) report.findings.push(finding);
    }
    return report;
  }

  private async eachRecord(dataset: LiveDataset, each: (line: number, record: DatasetRecord) => void): Promise<void> {
    const file = await this.store.fetch(dataset.storageKey).then(async (local) => (await fs.access(local), local)).catch((error: Error) => {
      this.logger.warn({ dataset: dataset.id, err: error.message }, "dataset file unavailable for the data quality report");
      throw new AppError(503, "artifact_store_unavailable", `the file of dataset ${dataset.id} could not be read for its quality report; retry later`);
    });
    // Stored datasets passed validation at upload: every line is a record of the dataset's format.
    for await (const entry of readJsonlLines(createReadStream(file))) {
      if (!("value" in entry)) continue;
      const check = checkRecord(entry.value, dataset.format as DatasetFormat);
      if (check.ok) each(entry.line, check.record);
    }
  }

  /** The model's token counter, or undefined (and a log line) when its folder cannot tokenize: the report then has no token findings. */
  private async tokenCounter(model: BaseModelInfo): Promise<ExampleTokenCounter | undefined> {
    try {
      return await loadTokenCounter(await this.tokenizerFolder(model));
    } catch (error) {
      this.logger.warn({ model: model.id, err: (error as Error).message }, "no token counts in data quality reports for this model");
      return undefined;
    }
  }

  /** fs: the model folder itself. s3: a local copy of its small tokenizer files only, under DATA_DIR/tokenizers/<id>. */
  private async tokenizerFolder(model: BaseModelInfo): Promise<string> {
    if (this.store.kind === "fs") return model.path;
    const folder = path.join(this.store.root, "tokenizers", model.id);
    await fs.mkdir(folder, { recursive: true });
    for (const name of TOKENIZER_FILES) {
      const key = `${modelKey(model.id)}/${name}`;
      if (!(await this.store.exists(key))) continue;
      const chunks: Buffer[] = [];
      for await (const chunk of this.store.read(key)) chunks.push(chunk as Buffer);
      await fs.writeFile(path.join(folder, name), Buffer.concat(chunks));
    }
    return folder;
  }
}

/** Where a request names its data and its acknowledgement, for the 422's details and message. */
export interface RequestPlaces {
  train: string;
  validation: string;
  acknowledge: string;
}

/** The places in a body of our own API (jobs and sweeps alike). */
export const JOB_BODY_PLACES: RequestPlaces = {
  train: "body.trainDatasetId",
  validation: "body.validationDatasetId",
  acknowledge: '"acknowledgeDataWarnings": true',
};

/**
 * 422 data_quality naming each blocking finding (its count, message and first lines), unless the
 * request acknowledged them. Each detail's path is the request field naming the dataset it concerns.
 */
export function refuseBlockingFindings(report: QualityReport, acknowledged: boolean, places: RequestPlaces): void {
  const blocking = blockingFindings(report);
  if (blocking.length === 0 || acknowledged) return;
  throw new AppError(
    422,
    "data_quality",
    `the data crosses data quality thresholds: ${blocking.map((finding) => `${finding.code} (${finding.count})`).join(", ")}; fix the data or resubmit with ${places.acknowledge}`,
    blocking.map((finding) => ({
      path: finding.code === "train_validation_leakage" ? places.validation : places.train,
      message: `${finding.code}: ${finding.message}; lines ${finding.lines.join(", ")}`,
    })),
  );
}
