// Base model administration against the configured artifact store:
//   models upload <dir> [--id <name>]   s3: uploads the folder to models/<id>/ in the bucket, where
//                                      the API lists it and workers fetch it; fs: copies it into MODELS_DIR
//   models list                        id, architecture, tasks
// Models are immutable per id: workers keep cached copies, so publish changed weights under a new id.
import { parseArgs } from "node:util";
import { openArtifactStore } from "../common/artifact-store.ts";
import { loadConfigOrExit } from "../common/config.ts";
import { listModels, uploadModel } from "../common/model-store.ts";

const USAGE = "usage: models upload <dir> [--id <name>] | models list";

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { id: { type: "string" }, json: { type: "boolean" } } });
  const [command, folder] = positionals;
  const config = loadConfigOrExit();
  const store = openArtifactStore(config);
  try {
    if (command === "upload" && folder) {
      const model = await uploadModel(config, store, folder, values.id);
      process.stderr.write(`uploaded ${model.id} (${model.architecture}; ${model.tasks.join(", ") || "no known task"}) to the ${store.kind} store\n`);
      return 0;
    }
    if (command === "list") {
      const models = await listModels(config, store);
      if (values.json) process.stdout.write(`${JSON.stringify(models.map(({ config: _config, ...model }) => model))}\n`);
      else for (const model of models) process.stdout.write(`${model.id}\t${model.architecture}\t${model.tasks.join(",")}\n`);
      return 0;
    }
    process.stderr.write(`${USAGE}\n`);
    return 2;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    return 1;
  } finally {
    if ("close" in store && typeof store.close === "function") store.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
