"""The backend for methods "gguf" and "convert": both end in llama.cpp's quantizer.

"gguf" quantizes the baseline checkpoint; "convert" first dequantizes another
(compressed-tensors) variant of the run, then takes the same path, with lineage.
The work itself lives in gguf_pipeline (convert/imatrix/quantize/read back) and
gguf_convert (dequantization).
"""

from __future__ import annotations

from pathlib import Path

from quantship.errors import InputError
from quantship.quantize.base import QuantizeContext, VariantOutput
from quantship.quantize.gguf_convert import convert_variant, source_checkpoint
from quantship.quantize.gguf_pipeline import check_request, produce_gguf
from quantship.quantize.spec import VariantSpec


class GGUFBackend:
    name = "gguf"

    def check(self, spec: VariantSpec, ctx: QuantizeContext) -> None:
        if spec.method == "convert":
            # The dequantized copy of the source is one more checkpoint on disk.
            check_request(spec, ctx, source_checkpoint(spec, ctx), extra_copies=1)
            return
        if spec.source is not None:
            raise InputError(f"variant {spec.name!r}: `source` is only for method convert", "remove `source`")
        check_request(spec, ctx, ctx.checkpoint, extra_copies=0)

    def quantize(self, spec: VariantSpec, ctx: QuantizeContext, out_dir: Path) -> VariantOutput:
        if spec.method == "convert":
            return convert_variant(spec, ctx, out_dir)
        return produce_gguf(spec, ctx, ctx.checkpoint, out_dir)


BACKEND = GGUFBackend()
