"""Plan once per decode step, run per layer: paged decode over persistent, CUDA-graph-safe buffers.

:class:`PagedAttentionWrapper` owns device buffers sized at construction (block tables, key lengths, slots,
positions, the split-decode workspace). :meth:`~PagedAttentionWrapper.plan` validates a step and rewrites the
buffers in place; :meth:`~PagedAttentionWrapper.run` only launches kernels that read them, so a CUDA graph
captured over ``run`` replays correctly after every later ``plan``. Padding rows (key length 0, slot -1)
store nothing and return zeros. ``plan`` copies on the current stream and the workspace is the wrapper's, so
``plan`` and ``run`` (or a replay) belong on one stream.

Imported lazily (it imports torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidDeviceError, UnsupportedDTypeError
from ..kernels.torch_outputs import check_out, plain_out, refuse_overlap
from .base import positive_int
from .kv_quant import canonical_kv_cache_dtype, check_scales, fp8_dtype
from .paged import select_paged_ops
from .paged_workspace import DecodeWorkspace, decode_workspace
from .validation import check_page_layout
from .variants import AttentionVariants
from .wrapper_plan import StepInputs, check_on_device, check_static, pack_host
from .wrapper_rope import check_rope, rotated_copies

__all__ = ["PagedAttentionWrapper"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


class PagedAttentionWrapper:
    """FlashInfer-style plan/run over the paged KV cache: :meth:`plan` once per step on the host, :meth:`run`
    per layer.

    Args:
        num_heads: Query heads ``Hq``.
        num_kv_heads: KV heads ``Hkv`` (divides ``Hq``).
        head_size: Head dimension ``D``.
        block_size: Tokens per cache block.
        max_batch: Largest (padded) batch a step may have.
        max_blocks_per_seq: Block-table width; decode splits are chosen for ``max_blocks_per_seq * block_size``
            positions, so they never change between steps.
        device: Where the buffers (and the caches, q, k, v passed to :meth:`run`) live.
        scale: Softmax scale (default ``head_size ** -0.5``).
        num_blocks: Blocks of the caches :meth:`run` will get; plans check block ids against it. Without it the
            first :meth:`run` learns it from its cache (and checks the ids planned so far).
        sliding_window: As :class:`~.paged.PagedAttentionBackend` (:mod:`.variants`).
        logits_soft_cap: As :class:`~.paged.PagedAttentionBackend`.
        alibi_slopes: As :class:`~.paged.PagedAttentionBackend`; ``[num_heads]``, copied to ``device`` once.
        kv_cache_dtype: As :class:`~.paged.PagedAttentionBackend` (:mod:`.kv_quant`): with ``"fp8_e4m3"`` /
            ``"fp8_e5m2"`` the caches hold that fp8 dtype (or ``torch.uint8`` bits) and :meth:`run` needs
            ``k_scale`` and ``v_scale``.

    Raises:
        InvalidArgumentTypeError: A size that is not an int, a device that is not a str/torch.device, a scale
            that is not a number, a variant or ``kv_cache_dtype`` of the wrong type.
        InvalidArgumentError: A size that is not positive, ``Hq % Hkv != 0``, a scale that is not finite and > 0,
            a variant out of range (``alibi_slopes`` not ``[num_heads]``), an unknown ``kv_cache_dtype``.
    """

    def __init__(
        self, num_heads: int, num_kv_heads: int, head_size: int, *, block_size: int, max_batch: int,
        max_blocks_per_seq: int, device: str | torch.device, scale: float | None = None,
        num_blocks: int | None = None, sliding_window: int | None = None, logits_soft_cap: float | None = None,
        alibi_slopes: torch.Tensor | Sequence[float] | None = None, kv_cache_dtype: str = "auto",
    ) -> None:  # fmt: skip
        self.num_heads = positive_int("num_heads", num_heads)
        self.num_kv_heads = positive_int("num_kv_heads", num_kv_heads)
        self.head_size = positive_int("head_size", head_size)
        self.block_size = positive_int("block_size", block_size)
        self.max_batch = positive_int("max_batch", max_batch)
        self.max_blocks_per_seq = positive_int("max_blocks_per_seq", max_blocks_per_seq)
        if num_heads % num_kv_heads:
            raise InvalidArgumentError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads}).")
        if not isinstance(device, (str, torch.device)):
            raise InvalidArgumentTypeError(f"device must be a str or torch.device; got {type(device).__name__}.")
        if scale is None:
            scale = head_size**-0.5
        elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise InvalidArgumentTypeError(f"scale must be a float or None; got {type(scale).__name__}.")
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidArgumentError(f"scale must be a finite number > 0; got {scale}.")
        self.scale = float(scale)
        self._num_blocks = None if num_blocks is None else positive_int("num_blocks", num_blocks)
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise InvalidArgumentError(f"device {device!r} is not a torch device: {exc}") from None
        self.variants = AttentionVariants(sliding_window, logits_soft_cap, alibi_slopes)
        self.kv_cache_dtype = canonical_kv_cache_dtype(kv_cache_dtype)
        self._variant_kw = self.variants.op_kwargs(self.num_heads, self.device)
        self._fp8 = None if self.kv_cache_dtype == "auto" else fp8_dtype(self.kv_cache_dtype)
        mb, w = self.max_batch, self.max_blocks_per_seq
        # One byte buffer, filled by one copy from the host, seen as int64 slots + positions, then (16-byte
        # aligned, as bound launches need) int32 block tables + key lengths (from element ``_kl_at``).
        self._kl_at = -(-mb * w // 4) * 4
        self._i32, self._i64, self._bytes = self._flat(self.device, False)
        self._i64[:mb].fill_(-1)
        self._dev_index = self._i32.get_device()  # -1 on CPU
        # Host staging for host inputs: two buffers (filling one never waits for the copy of the previous step),
        # filled through numpy views; on CPU the buffers themselves.
        self._staging: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._events: list[Any] = []
        if self.device.type == "cpu":
            self._staging.append((self._i32, self._i64, self._bytes))
        else:
            pin = self.device.type == "cuda"
            for _ in range(2):
                self._staging.append(self._flat(torch.device("cpu"), pin))
                if pin:
                    self._events.append(torch.cuda.Event())  # type: ignore[no-untyped-call]  # torch declares no types for it
        self._recorded = [False, False]
        self._staging_np: list[tuple[Any, ...] | None] = [None] * len(self._staging)
        self._view_cache: dict[int, tuple[torch.Tensor, ...]] = {}
        self._page_shape = torch.Size((self.block_size, self.num_kv_heads, self.head_size))
        self._shapes = (torch.Size(), torch.Size())  # query and key/value shapes of the planned batch
        self._workspace: DecodeWorkspace | None = None
        if self.device.type == "cuda":
            self._workspace = decode_workspace(
                mb, self.num_heads, self.num_kv_heads, self.head_size, w * self.block_size, _FLOATS, self.device
            )
        self._ops: dict[torch.dtype, tuple[Any, str, Any]] = {}
        self._fused: Any = None  # paged_launcher.FusedDecodeLauncher, made with the first Triton ops
        self._next, self._batch, self._real = 0, 0, 0
        self._top = -1  # largest block id planned while num_blocks was unknown (checked by the next run)
        self._cache_strides: tuple[Any, ...] = ()  # the last caches' strides and block count, of a layout run reads
        self._clamp_pending = False
        self._views(0)

    # ------------------------------------------------------------------ buffers
    def _flat(self, device: torch.device, pin: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(int32 view, int64 view, bytes)`` of one zeroed buffer laid out as the persistent one."""
        at = 16 * self.max_batch  # bytes of the int64 slots + positions: the int32 part starts 16-byte aligned
        raw = torch.zeros(at + (self._kl_at + self.max_batch) * 4, dtype=torch.uint8, device=device, pin_memory=pin)
        return raw[at:].view(torch.int32), raw[:at].view(torch.int64), raw

    def _split(self, i32: torch.Tensor, i64: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(block_tables [mb, w], key_lens [mb], slot_mapping [mb], positions [mb])`` views of a buffer pair."""
        mb, w = self.max_batch, self.max_blocks_per_seq
        return i32[: mb * w].view(mb, w), i32[self._kl_at :], i64[:mb], i64[mb:]

    def _views(self, batch: int) -> None:
        views = self._view_cache.get(batch)
        if views is None:
            views = self._view_cache[batch] = tuple(t[:batch] for t in self._split(self._i32, self._i64))
        self._bt, self._kl, self._sl, self._pos = views
        self._shapes = (
            torch.Size((batch, self.num_heads, self.head_size)),
            torch.Size((batch, self.num_kv_heads, self.head_size)),
        )

    @property
    def batch_size(self) -> int:
        """The current (padded) batch: rows :meth:`run` expects."""
        return self._batch

    @property
    def positions(self) -> torch.Tensor:
        """int64 ``[batch_size]`` view of the persistent positions buffer (RoPE positions; 0 on padding)."""
        return self._pos

    @property
    def block_tables(self) -> torch.Tensor:
        """int32 ``[batch_size, max_blocks_per_seq]`` view of the persistent block tables (zeros on padding)."""
        return self._bt

    @property
    def key_lens(self) -> torch.Tensor:
        """int32 ``[batch_size]`` view of the persistent key lengths (``context_lens + 1``; 0 on padding)."""
        return self._kl

    @property
    def slot_mapping(self) -> torch.Tensor:
        """int64 ``[batch_size]`` view of the persistent slots (-1 on padding)."""
        return self._sl

    # ------------------------------------------------------------------ plan
    def plan(
        self, context_lens: object, block_tables: object, slot_mapping: object, *, batch_size: int | None = None,
        trusted: bool = False,
    ) -> None:  # fmt: skip
        """Set up a decode step (one new token per sequence) for every layer's :meth:`run`.

        ``context_lens[i]`` tokens of sequence ``i`` are cached already: its new token is at that position and
        attends to ``context_lens[i] + 1`` keys. Rows ``n .. batch_size - 1`` are padding. The buffers are
        rewritten in place; on error they are left as they were.

        Args:
            context_lens: ``[n]`` ints (list, numpy array, CPU or device tensor).
            block_tables: ``[n, w]`` block ids, ``w <= max_blocks_per_seq``; columns past a sequence's last
                block are ignored.
            slot_mapping: ``[n]`` cache slot of each new token (negative: do not store it).
            batch_size: Padded batch, ``n <= batch_size <= max_batch`` (default ``n``).
            trusted: Skip the value checks (no host sync even for device inputs). Block ids are still clamped
                into the cache and slots outside it skipped, so misuse cannot write outside the cache.

        Raises:
            InvalidArgumentTypeError: Inputs that are not integer sequences/tensors.
            InvalidArgumentError: Shapes, batch size or slots that do not fit.
            InvalidBlockError: A table too narrow for a sequence, or a used entry that is not a block id.
        """
        step = check_static(
            context_lens, block_tables, slot_mapping, batch_size, self.max_batch, self.max_blocks_per_seq
        )
        if not isinstance(trusted, bool):
            raise InvalidArgumentTypeError(f"trusted must be a bool; got {type(trusted).__name__}.")
        top = -1
        if not trusted:
            top = check_on_device(step, self.block_size, self._num_blocks)
        if step.ctx.device.type == "cpu":
            self._fill_from_host(step, trusted)
        else:
            self._fill(self._i32, self._i64, step, trusted, self.device)
        self._top = max(self._top, top) if self._num_blocks is None else -1
        self._clamp_pending = self._clamp_pending or (trusted and self._num_blocks is None)
        self._batch, self._real = step.batch_size, int(step.ctx.shape[0])
        self._views(step.batch_size)

    def _fill_from_host(self, step: StepInputs, trusted: bool) -> None:
        """Pack host inputs into the next staging pair (numpy) and copy it to the device (no host sync)."""
        k = self._next if len(self._staging) > 1 else 0
        if self._events and self._recorded[k]:
            self._events[k].synchronize()  # the copy of two plans ago; long finished in any real loop
        views = self._staging_np[k]
        if views is None:  # numpy views of the staging buffers, made once
            views = self._staging_np[k] = tuple(t.numpy() for t in self._split(*self._staging[k][:2]))
        pack_host(step, views, self.block_size, self._num_blocks, trusted)
        if self._staging[k][0] is self._i32:  # CPU: the staging buffer is the wrapper's own
            return
        self._bytes.copy_(self._staging[k][2], non_blocking=True)
        if self._events:
            self._events[k].record()
            self._recorded[k] = True
        self._next ^= 1

    def _fill(self, i32: torch.Tensor, i64: torch.Tensor, step: StepInputs, trusted: bool, dev: torch.device) -> None:
        """Write one step into a buffer pair: real rows first, padding after."""
        ctx, table, slots, _ = step
        n, w = int(table.shape[0]), int(table.shape[1])
        ctx = ctx.to(device=dev, dtype=torch.int64)
        table = table.to(device=dev)
        slots = slots.to(device=dev, dtype=torch.int64)
        if trusted:
            nb = self._num_blocks
            table = table.clamp(0, (nb - 1) if nb is not None else None)
            if nb is not None:
                slots = torch.where(slots < nb * self.block_size, slots, -1)
        bt, kl, sl, pos = self._split(i32, i64)
        i32.zero_()
        bt[:n, :w].copy_(table)
        kl[:n].copy_((ctx + 1).clamp(0, self.max_blocks_per_seq * self.block_size))  # reads stay in the row
        sl.fill_(-1)
        sl[:n].copy_(slots)
        pos.zero_()
        pos[:n].copy_(ctx)

    # ------------------------------------------------------------------ run
    def _bind_cache(self, k_cache: torch.Tensor) -> None:
        """Learn (or check) the caches' block count; bound what was planned without it."""
        nb = int(k_cache.shape[0])
        if self._num_blocks is None:
            if self._top >= nb:
                raise InvalidArgumentError(
                    f"the plan uses block id {self._top} but the cache has {nb} blocks; plan with this cache's ids."
                )
            self._num_blocks = nb
            if self._clamp_pending:
                bt = self._split(self._i32, self._i64)[0]
                bt.clamp_(0, nb - 1)
                self._clamp_pending = False
        elif nb != self._num_blocks:
            raise InvalidArgumentError(
                f"the cache has {nb} blocks but the wrapper plans for num_blocks={self._num_blocks}; "
                "every layer's cache must have the same number of blocks."
            )

    def _select(self, query: torch.Tensor) -> tuple[Any, str, Any]:
        """The ops for this dtype (chosen by :func:`select_paged_ops` on the dtype's first run, with the wrapper's
        variants and ``kv_cache_dtype``) and, for Triton, the decode configuration."""
        if query.dtype not in _FLOATS and query.dtype != torch.float64:
            raise UnsupportedDTypeError(f"query dtype {query.dtype} is not a float type attention computes in.")
        ops, impl = select_paged_ops(
            query.device, query.dtype, self.head_size, self.block_size, kv_cache_dtype=self.kv_cache_dtype,
            variants=self.variants.names,
        )  # fmt: skip
        cfg = None
        if impl == "triton":
            if self._workspace is None:  # not expected: Triton runs on CUDA only
                raise InvalidArgumentError(f"the wrapper's buffers are on {self.device}; Triton needs CUDA.")
            from . import paged_triton

            cfg = paged_triton.decode_config(
                self.head_size, query.dtype, self.num_heads // self.num_kv_heads, kv_fp8=self._fp8 is not None
            )
        self._ops[query.dtype] = (ops, impl, cfg)
        return ops, impl, cfg

    def run(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor],
        *, out: torch.Tensor | None = None, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
        cos_sin_cache: torch.Tensor | None = None, is_neox: bool | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """One layer: store the step's new K/V at its slots and run paged decode with the wrapper's variants.
        On CUDA this is one fused Triton launch (:func:`~.paged_triton.paged_decode_store` over the wrapper's
        workspace; ``store_kv`` then ``paged_decode`` with ``SAGELLM_FUSED_DECODE=0``): no sync, no allocation
        when ``out`` is given, so a CUDA graph may capture it; elsewhere the torch ops store, then decode.

        Args:
            query: ``[batch_size, Hq, D]``.
            key: ``[batch_size, Hkv, D]``.
            value: ``[batch_size, Hkv, D]``.
            kv_cache: ``(K, V)``, each ``[num_blocks, block_size, Hkv, D]`` on the device, in the query's dtype
                (``kv_cache_dtype="auto"``) or the fp8 dtype (or ``torch.uint8``); pages token-major (contiguous)
                or head-major (:func:`.validation.page_layout`).
            out: Optional ``[batch_size, Hq, D]`` result buffer in the query's dtype.
            k_scale: fp8 caches only: float32 device tensor of 1 or ``Hkv`` key scales (:mod:`.kv_quant`).
            v_scale: Same for values.
            cos_sin_cache: ``[max_position, rot_dim]`` (cos then sin halves, as ``rotary_embedding`` takes it): rotate
                the query and the new key to :attr:`positions` inside the attention (``rotary_embedding`` need not
                run first; the inputs are not modified). Checked by :func:`.wrapper_rope.check_rope`.
            is_neox: With ``cos_sin_cache``: NeoX/Llama halves (True, the default) or GPT-J pairs (False).

        Returns:
            ``[batch_size, Hq, D]``; padding rows are zeros.

        Raises:
            InvalidArgumentError: Shapes that do not match the plan or the wrapper, a cache of another layout, a
                cache whose block count differs from the one planned for, a scale of another element count, an
                ``out`` sharing memory with the other tensors.
            InvalidArgumentTypeError: Inputs that are not tensors (``kv_cache`` not a pair of them); scales missing
                for an fp8 cache or given for an ``"auto"`` one.
            UnsupportedDTypeError: Tensors of different dtypes, a cache not of ``kv_cache_dtype``, a dtype
                attention does not compute in, a scale that is not float32.
            InvalidDeviceError: A tensor not on the wrapper's device.
            UnsupportedOperationError: No implementation serves this dtype with the wrapper's variants and
                ``kv_cache_dtype`` (the registry's message says what each supports).
        """
        b = self._batch
        pair = kv_cache if isinstance(kv_cache, (tuple, list)) and len(kv_cache) == 2 else (None, None)
        k_cache, v_cache = pair
        t = torch.Tensor
        if not (
            isinstance(query, t) and isinstance(key, t) and isinstance(value, t) and isinstance(k_cache, t)
            and isinstance(v_cache, t)
        ):  # fmt: skip
            raise InvalidArgumentTypeError(
                "run takes tensors query, key, value and a (K, V) pair of cache tensors; got "
                f"{type(query).__name__}, {type(key).__name__}, {type(value).__name__}, {type(kv_cache).__name__}."
            )
        qs, ks, vs, kcs, vcs = query.shape, key.shape, value.shape, k_cache.shape, v_cache.shape
        q_shape, kv_shape = self._shapes
        if out is not None and not plain_out(out):  # a tensor, contiguous, writable in place
            check_out("run", out, q_shape, query.dtype, query.device, ())  # raises, saying what is wrong
        if (
            qs != q_shape or ks != kv_shape or vs != kv_shape or kcs[1:] != self._page_shape or vcs != kcs
            or (out is not None and out.shape != q_shape)
        ):  # fmt: skip
            raise InvalidArgumentError(
                f"run expects query [{b}, {self.num_heads}, {self.head_size}], key/value [{b}, {self.num_kv_heads}, "
                f"{self.head_size}] and caches [num_blocks, {self.block_size}, {self.num_kv_heads}, "
                f"{self.head_size}] (the planned batch and the wrapper's shape); got {tuple(query.shape)}, "
                f"{tuple(key.shape)}, {tuple(value.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
                + ("" if out is None else f", out {tuple(out.shape)}") + "."
            )  # fmt: skip
        dt, dev, fp8 = query.dtype, self._dev_index, self._fp8
        cdt = dt if fp8 is None else k_cache.dtype
        if (
            key.dtype != dt or value.dtype != dt or v_cache.dtype != k_cache.dtype or k_cache.dtype != cdt
            or (fp8 is not None and cdt != fp8 and cdt != torch.uint8) or (out is not None and out.dtype != dt)
        ):  # fmt: skip
            want = "the query's dtype" if fp8 is None else f"{fp8} (or torch.uint8)"
            raise UnsupportedDTypeError(
                f"query, key, value and out must share one dtype and the caches hold {want} "
                f"(kv_cache_dtype={self.kv_cache_dtype!r}); got {dt}, {key.dtype}, {value.dtype}, "
                f"caches {k_cache.dtype}, {v_cache.dtype}" + ("" if out is None else f", out {out.dtype}") + "."
            )
        if (
            query.get_device() != dev or key.get_device() != dev or value.get_device() != dev
            or k_cache.get_device() != dev or v_cache.get_device() != dev
            or (out is not None and out.get_device() != dev)
        ):  # fmt: skip
            raise InvalidDeviceError(
                f"run needs every tensor on the wrapper's device {self._i32.device}; got query on {query.device}, "
                f"key on {key.device}, value on {value.device}, caches on {k_cache.device} and {v_cache.device}."
            )
        strides = (k_cache.stride(), v_cache.stride(), kcs[0])  # page_layout depends on these only
        if strides != self._cache_strides:  # a layout not seen yet: token- or head-major pages (page_layout)
            check_page_layout("key cache", k_cache)
            check_page_layout("value cache", v_cache)
            self._cache_strides = strides
        scales = check_scales(self.kv_cache_dtype, k_scale, v_scale, self.num_kv_heads, query.device)
        rope = None if cos_sin_cache is None and is_neox is None else check_rope(
            cos_sin_cache, is_neox, self.head_size, query.device
        )  # fmt: skip
        if fp8 is not None and cdt != fp8:
            k_cache, v_cache = k_cache.view(fp8), v_cache.view(fp8)
        found = self._ops.get(dt)
        ops, impl, cfg = found if found is not None else self._select(query)  # raises before any state changes
        if impl == "triton" and self._fused is None:
            from .paged_launcher import FusedDecodeLauncher

            self._fused = FusedDecodeLauncher()
        fused = impl == "triton" and self._fused.enabled()
        learn = self._num_blocks != kcs[0] or self._clamp_pending
        if out is not None and (learn or not fused):  # else the fused launch checks it, by its binding's spans
            cs = () if rope is None else rope[:1]  # the RoPE cache, which the decode reads too
            refuse_overlap("run", out, (query, key, value, k_cache, v_cache, self._bytes, *scales.values(), *cs))
        if learn:
            self._bind_cache(k_cache)
        if out is None:
            out = torch.empty_like(query, memory_format=torch.contiguous_format)
        if b == 0:
            return out
        kw = {**self._variant_kw, **scales} if scales else self._variant_kw
        if fused:
            # The plan views of a batch, the workspace, cfg (per dtype), scale and variants are the wrapper's.
            fixed = (b,) if not scales else (b, *[(s.shape, s.stride()) for s in scales.values()])
            return self._fused(  # type: ignore[no-any-return]  # the launcher returns ``out``
                query, key, value, k_cache, v_cache, out, self._bt, self._kl, self._sl, self.scale, cfg=cfg,
                workspace=self._workspace, fixed=fixed, rope=rope, **kw,
            )  # fmt: skip
        if rope is not None:  # the paths without the fused launch rotate copies first
            query, key = rotated_copies(self._pos, query, key, rope, self.head_size)
        if impl == "triton":
            ops.store_kv(key, value, k_cache, v_cache, self._sl, **scales)
            ws = self._workspace
            return ops.paged_decode(  # type: ignore[no-any-return]  # the op returns ``out``
                query, k_cache, v_cache, self._bt, self._kl, self.scale, out=out, cfg=cfg, workspace=ws, **kw
            )
        ops.store_kv(key, value, k_cache, v_cache, self._sl, **scales)
        n = self._real  # torch ops: real rows only (a row without keys has no softmax)
        if n:
            ops.paged_decode(query[:n], k_cache, v_cache, self._bt[:n], self._kl[:n], self.scale, out=out[:n], **kw)
        out[n:].zero_()
        return out
