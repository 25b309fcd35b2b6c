"""Packaging hook: the wheel carries the pass sources (``llvm_pass/``) as
package data in ``mappedtrace/_pass/``, so an installed ``mappedtrace cc``
builds the plugin on first use exactly as a checkout does (into
``~/.cache/mappedtrace``, keyed by the sources' hash, against the machine's
own LLVM 22); likewise ``runtime/mtfarmem.c`` (the far-memory helper) goes
to ``mappedtrace/farmem/``.  Everything else is declared in pyproject.toml.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: the files of llvm_pass/ that build the plugin (mappedtrace.toolchain hashes the same kinds)
PASS_SUFFIXES = {".cpp", ".h", ".txt", ".cmake", ".md"}


class BuildPyWithPass(build_py):
    def run(self) -> None:
        super().run()
        src = HERE / "llvm_pass"
        dst = Path(self.build_lib) / "mappedtrace" / "_pass"
        shutil.rmtree(dst, ignore_errors=True)
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if p.is_file() and "build" not in rel.parts and p.suffix in PASS_SUFFIXES:
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dst / rel)
        # the far-memory helper's source, built on first use like the plugin
        rt = Path(self.build_lib) / "mappedtrace" / "farmem"
        rt.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HERE / "runtime" / "mtfarmem.c", rt / "mtfarmem.c")


setup(cmdclass={"build_py": BuildPyWithPass})
