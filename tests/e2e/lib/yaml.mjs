// A minimal YAML writer for Envoy bootstraps: block maps and lists; every string is written as a
// JSON string, which is also a valid YAML double-quoted scalar, so nothing needs YAML escaping.

const isScalar = (v) => v === null || typeof v !== 'object';

function scalar(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(String(v));
}

function key(k) {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? k : JSON.stringify(k);
}

function emit(value, indent, lines) {
  const pad = ' '.repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) { lines.push(`${pad}[]`); return; }
    for (const item of value) {
      if (isScalar(item)) {
        lines.push(`${pad}- ${scalar(item)}`);
      } else if (Array.isArray(item) || Object.keys(item).length === 0) {
        lines.push(`${pad}-`);
        emit(item, indent + 2, lines);
      } else {
        const sub = [];
        emit(item, indent + 2, sub);
        sub[0] = `${pad}- ${sub[0].slice(indent + 2)}`;
        lines.push(...sub);
      }
    }
    return;
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  if (entries.length === 0) { lines.push(`${pad}{}`); return; }
  for (const [k, v] of entries) {
    if (isScalar(v)) {
      lines.push(`${pad}${key(k)}: ${scalar(v)}`);
    } else if ((Array.isArray(v) && v.length === 0) || (!Array.isArray(v) && Object.keys(v).length === 0)) {
      lines.push(`${pad}${key(k)}: ${Array.isArray(v) ? '[]' : '{}'}`);
    } else {
      lines.push(`${pad}${key(k)}:`);
      emit(v, indent + 2, lines);
    }
  }
}

export function toYaml(value) {
  const lines = [];
  emit(value, 0, lines);
  return `${lines.join('\n')}\n`;
}
