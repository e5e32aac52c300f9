"""Regenerate nncy/proto/nnabla_pb2.py from nncy/proto/nnabla.proto.

Needs grpcio-tools at development time only (it bundles protoc):

    python -m venv .protoc-env && .protoc-env/bin/pip install grpcio-tools
    .protoc-env/bin/python scripts/gen_proto.py

The generated module is committed, so neither protoc nor grpcio-tools is a
dependency of nncy.  protoc writes a call that refuses to run on a protobuf
runtime older than the protoc release; it is removed here, because the code
it guards (descriptor pool + builder) works on every runtime since 5.26, and
nncy should not force the newest protobuf on its users (pyproject.toml gives
the supported range; tests/test_serialization.py loads the module).
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = 'nncy/proto/nnabla.proto'
OUT = ROOT / 'nncy' / 'proto' / 'nnabla_pb2.py'

_CHECK = re.compile(r'from google\.protobuf import runtime_version as _runtime_version\n'
                    r'|_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:    .*\n)*?\)\n')


def main():
    subprocess.check_call([sys.executable, '-m', 'grpc_tools.protoc', '-I', str(ROOT),
                           '--python_out', str(ROOT), PROTO])
    text = OUT.read_text()
    text, n = _CHECK.subn('', text)
    if n != 2:
        sys.exit('gen_proto: the runtime-version check was not found as expected (%d)' % n)
    text = text.replace('# NO CHECKED-IN PROTOBUF GENCODE\n', '')
    OUT.write_text('# Regenerate with scripts/gen_proto.py (runtime-version check removed).\n' + text)
    print('wrote', OUT.relative_to(ROOT))


if __name__ == '__main__':
    main()
