"""Compile a Triton kernel ahead of time for a GPU that is not here.

The interpreter used on CPU accepts things the GPU compiler rejects (tl.dot sides below 16, some
type mixes), so every configuration the launchers use is also compiled for sm_90 - by
`python -m fastcodec.dev.kernel_report`, which reads the resulting SASS too. Must run without
TRITON_INTERPRET (the interpreter replaces @triton.jit).
"""
import inspect

from ._launch import triton_version


def _source(fn, args, constexprs):
    """An ASTSource for `fn`; args: name -> type string for runtime arguments."""
    from triton.compiler import ASTSource

    params = list(inspect.signature(fn.fn).parameters)
    sig = {p: args.get(p, "constexpr") for p in params}
    if "constexprs" in inspect.signature(ASTSource.__init__).parameters:  # triton >= 3.3
        return ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    if triton_version() >= (3, 2):  # names as keys, constants beside
        return ASTSource(fn=fn, signature=sig, constants=constexprs)
    # triton 3.0-3.1: positional indices, constants separate
    sig = {i: args[p] for i, p in enumerate(params) if p in args}
    consts = {i: constexprs[p] for i, p in enumerate(params) if p in constexprs}
    return ASTSource(fn=fn, signature=sig, constants=consts)


def compile_one(kernel, args, constexprs, num_warps, arch=90):
    """triton.compile for cuda sm_<arch> with no GPU: args maps runtime arguments to type strings
    ('*fp32', 'i32', ...), constexprs the compile-time ones."""
    import triton
    from triton.backends.compiler import GPUTarget

    return triton.compile(_source(kernel, args, constexprs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps})


def jit_specialized(kernel, args, kwargs, arch=90):
    """(signature, constexprs, attrs, options) that `kernel[grid](*args, **kwargs)` would compile
    with on an sm_<arch> GPU: Triton's own binder decides, from the actual arguments, which ints
    are specialized (equal to 1, divisible by 16) and which pointers are 16-byte aligned. None
    where this Triton's JIT does not expose its binder (before 3.5): then only the plain types are known."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime import jit

    if not (hasattr(jit, "create_function_from_signature") and hasattr(kernel, "_pack_args")):
        return None
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = jit.create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    return kernel._pack_args(backend, kwargs, bound_args, specialization, options)


def compile_specialized(kernel, specialized, arch=90):
    """triton.compile of what jit_specialized() returned, for cuda sm_<arch> with no GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options, signature, constexprs, attrs = specialized
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                          options=options.__dict__)


_OPTIONS = ("num_warps", "num_stages", "num_ctas")
_POINTEE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int64": "i64",
            "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "i1"}


def stand_in(kernel, args, kwargs):
    """(types, constexprs, num_warps) for compile_one() from a launch's arguments, where
    jit_specialized() cannot ask the JIT: plain types, no specialization (what runs may differ)."""
    names = list(kernel.arg_names)
    types, constexprs = {}, {k: v for k, v in kwargs.items() if k not in _OPTIONS}
    for name, value in zip(names, args):
        if hasattr(value, "data_ptr"):
            types[name] = "*" + _POINTEE[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool):
            types[name] = "i1"
        elif isinstance(value, int):
            types[name] = "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
        else:
            types[name] = "fp32"
    return types, constexprs, kwargs.get("num_warps", 4)
