// Validates Kubernetes manifests offline against the API schemas that the
// kubernetes-models package carries (one model class per apiVersion and
// kind, each with an ajv validator generated from Kubernetes' OpenAPI).
//
//   node validate.mjs FILE.yaml...
//
// Prints one JSON object: {"documents": [{file, index, apiVersion, kind,
// name, errors: [...]}]}, an empty errors list for a valid document; exits 1
// when any document has errors, 2 on a usage or read error.
//
// Besides the schema (types, enums, required fields), unknown fields are
// errors, as the API server's strict field validation (kubectl's default)
// makes them: kubernetes-models' validators accept any extra property, so
// each field is checked by giving it a value no schema type accepts and
// seeing whether the validator objects at exactly that path. A field the
// schema does not know draws no objection.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

async function modelFor(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const path = slash < 0
    ? `kubernetes-models/${apiVersion}/${kind}`
    : `kubernetes-models/${apiVersion.slice(0, slash)}/${apiVersion.slice(slash + 1)}/${kind}`;
  try {
    const mod = await import(path);
    return mod[kind] ?? null;
  } catch {
    return null;
  }
}

function schemaErrors(Model, doc) {
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors;
  }
}

function format(err) {
  return `${err.instancePath || "/"}: ${err.message}`;
}

// Two values that no single JSON schema type accepts both of: every typed
// field rejects at least one of them.
const PROBES = [true, "\u0000not-a-value"];

function knownField(Model, doc, parent, key, path) {
  const saved = parent[key];
  try {
    for (const probe of PROBES) {
      parent[key] = probe;
      if (schemaErrors(Model, doc).some((e) => e.instancePath === path ||
          e.instancePath.startsWith(path + "/"))) {
        return true;
      }
    }
    return false;
  } finally {
    parent[key] = saved;
  }
}

function unknownFields(Model, doc) {
  const found = [];
  // The keys of maps (labels, data, resources...) pass as known: their
  // values are typed too.
  const walk = (node, path) => {
    if (Array.isArray(node)) {
      node.forEach((v, i) => walk(v, `${path}/${i}`));
      return;
    }
    if (node === null || typeof node !== "object") return;
    for (const key of Object.keys(node)) {
      const here = `${path}/${key.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      if (!knownField(Model, doc, node, key, here)) {
        found.push({ instancePath: here, message: "unknown field" });
        continue;
      }
      walk(node[key], here);
    }
  };
  walk(doc, "");
  return found;
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate.mjs FILE.yaml...");
    return 2;
  }
  const report = { documents: [] };
  let bad = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      console.error(`${file}: ${e.message}`);
      return 2;
    }
    const docs = parseAllDocuments(text);
    for (const [index, parsed] of docs.entries()) {
      const entry = { file, index, errors: [] };
      report.documents.push(entry);
      if (parsed.errors.length > 0) {
        entry.errors = parsed.errors.map((e) => `YAML: ${e.message}`);
        bad++;
        continue;
      }
      const doc = parsed.toJS();
      if (doc === null) {
        entry.errors = ["empty document"];
        bad++;
        continue;
      }
      Object.assign(entry, {
        apiVersion: doc.apiVersion, kind: doc.kind, name: doc.metadata?.name,
      });
      const Model = await modelFor(String(doc.apiVersion), String(doc.kind));
      if (Model === null) {
        entry.errors = [`no schema for apiVersion ${doc.apiVersion} kind ${doc.kind}`];
        bad++;
        continue;
      }
      const errors = [...schemaErrors(Model, doc), ...unknownFields(Model, doc)];
      entry.errors = errors.map(format);
      if (errors.length > 0) bad++;
    }
  }
  console.log(JSON.stringify(report, null, 1));
  return bad > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
