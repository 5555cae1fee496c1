// Load a memwatch .heapsnapshot with memlab's heap parser (a consumer no one
// here wrote) and print what it sees as JSON on stdout:
//   {"nodes": N (non-synthetic), "by_name": {name: count}, "edges": E,
//    "path": [{"id", "name", "edge", "edge_type"}...] (memlab's shortest path
//    from the root to the first node whose name is argv[3], if given),
//    "retained": retained size of that node}
// Usage: node check.js FILE.heapsnapshot [CLASS_NAME]
'use strict';
const path = require('path');
const {getFullHeapFromFile} = require(path.join(__dirname, 'node_modules', '@memlab', 'heap-analysis'));

(async function main() {
  const [file, className] = process.argv.slice(2);
  // memlab prints progress on stdout; keep ours clean.
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = () => true;
  let heap;
  try {
    heap = await getFullHeapFromFile(file);
  } finally {
    process.stdout.write = write;
  }
  const byName = {};
  let nodes = 0;
  let edges = 0;
  heap.nodes.forEach(node => {
    edges += node.edge_count;
    if (node.type === 'synthetic') return;
    nodes += 1;
    const name = node.type === 'string' ? 'str' : node.name;
    byName[name] = (byName[name] || 0) + 1;
  });
  const out = {nodes, edges, by_name: byName, path: null, retained: null};
  if (className) {
    const target = heap.getAnyObjectWithClassName(className);
    if (target) {
      const hops = [];
      let node = target;
      const seen = new Set();
      while (node && !seen.has(node.id)) {
        seen.add(node.id);
        const edge = node.pathEdge;
        hops.push({id: node.id, name: node.name,
                   edge: edge ? edge.name_or_index : null, edge_type: edge ? edge.type : null});
        node = edge ? edge.fromNode : null;
      }
      out.path = hops.reverse();
      out.retained = target.retainedSize;
    }
  }
  write(JSON.stringify(out) + '\n');
})().catch(err => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
