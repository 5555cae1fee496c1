// Load a memwatch .heapsnapshot with Chrome DevTools' own heap snapshot code
// (re-exported by heap-snapshot-toolkit) and print its Summary view as JSON:
//   {"total": objects in the Summary, "by_name": {class: count},
//    "self_size": {class: bytes}, "unreachable": objects DevTools puts at system distance}
// Usage: node devtools.mjs FILE.heapsnapshot
import { createReadStream } from 'node:fs'
import { parse } from 'heap-snapshot-toolkit'

const snap = await parse(createReadStream(process.argv[2], 'utf-8'))
const byName = {}
const selfSize = {}
let total = 0
let unreachable = 0
for (const a of Object.values(snap.aggregatesWithFilter({}))) {
  byName[a.name] = (byName[a.name] || 0) + a.count
  selfSize[a.name] = (selfSize[a.name] || 0) + a.self
  total += a.count
  if (a.distance >= 100000000) unreachable += a.count
}
process.stdout.write(JSON.stringify({ total, by_name: byName, self_size: selfSize, unreachable }) + '\n')
