"""Developer tools, not used by the codec or the trainer:

- kernel_report: compiles the GPU kernels for sm_90 without a GPU and reports their tensor-core use
  and roofline floors (`python -m fastcodec.dev.kernel_report`; CI runs it with --check)
- shapes: the codec's layer list at a preset, for the benchmarks
"""
