// Compile every .py under a folder to CPython 3.14 bytecode, with CPython 3.14 itself (Pyodide:
// CPython built for WebAssembly; bytecode does not depend on the platform). Lambda's code folder
// is read-only, so an asset without .pyc recompiles every module it imports on every cold start.
// UNCHECKED_HASH: the interpreter uses the .pyc without comparing source timestamps (a zip's
// mtimes mean nothing). Prints one JSON line: {version, magic, sources, compiled}.
import { loadPyodide } from "pyodide";

const [folder] = process.argv.slice(2);
if (!folder) {
  console.error("usage: node compile_bytecode.mjs <folder>");
  process.exit(2);
}
const py = await loadPyodide({ stdout: () => {}, stderr: (s) => console.error(s) });
py.FS.mkdirTree("/asset");
py.FS.mount(py.FS.filesystems.NODEFS, { root: folder }, "/asset");
const report = py.runPython(`
import compileall, importlib.util, json, pathlib, py_compile, sys
compileall.compile_dir("/asset", quiet=2, workers=1,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
root = pathlib.Path("/asset")
tag = sys.implementation.cache_tag
sources = [p for p in root.rglob("*.py")]
compiled = [p for p in sources if importlib.util.cache_from_source(str(p)) and
            pathlib.Path(importlib.util.cache_from_source(str(p))).is_file()]
json.dumps({"version": sys.version.split()[0], "tag": tag, "magic": importlib.util.MAGIC_NUMBER.hex(),
            "sources": len(sources), "compiled": len(compiled)})
`);
console.log(report);
