"""Decoders of the files MappedTrace reads: ELF (symbols, sections, build-id,
TLS), LLVM StackMap v3 (``.llvm_stackmaps``), MappedTrace's compact stack maps
(``.mtstack``) and MappedTrace's ``.mtmap``.

The joined view that the rest of the tracer uses is
:class:`mappedtrace.formats.maps.BinaryMaps`.  This is the lowest layer: it
imports nothing above :mod:`mappedtrace.binreader` and :mod:`mappedtrace.errors`.
"""
