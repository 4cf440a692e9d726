"""Build hook: compile the credex.v1 protos into the wheel as credex/v1/*_pb2*.py.

The protos are read from the repository (../../proto, this package sits at clients/python), or
from CREDEX_PROTO_DIR. Only credex/v1 is compiled: a generated `grpc/` package (health,
reflection) would shadow grpcio. Builds from the repository checkout only (pip builds a local
directory in place); an sdist carries no protos.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    explicit = os.environ.get("CREDEX_PROTO_DIR")
    d = Path(explicit) if explicit else HERE.parent.parent / "proto"
    if not (d / "credex" / "v1" / "gateway.proto").is_file():
        raise SystemExit(f"credex-client: no credex/v1 protos under {d} (build from the repository, "
                         "or set CREDEX_PROTO_DIR)")
    return d


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc

        src = proto_dir()
        out = Path(self.build_lib)
        files = sorted(str(p.relative_to(src)) for p in (src / "credex" / "v1").glob("*.proto"))
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}", *files])
        if rc != 0:
            raise SystemExit(f"credex-client: grpc_tools.protoc failed ({rc})")
        # credex is a regular package (src/credex/__init__.py); v1 becomes one too.
        (out / "credex" / "v1" / "__init__.py").write_text('"""Generated from proto/credex/v1."""\n')


setup(cmdclass={"build_py": BuildWithStubs})
