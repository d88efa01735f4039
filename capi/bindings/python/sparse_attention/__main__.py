"""python -m sparse_attention info: versions, backends, the library file, PyTorch."""
import argparse
import sys


def info():
    import sparse_attention as sa
    from sparse_attention import sparse_ctypes as sc
    lib = sc.library()
    v = sc.api_version()
    print(f"sparse_attention {sa.library_version()} (C API {v >> 16}.{(v >> 8) & 0xFF}."
          f"{v & 0xFF})")
    print(f"library: {lib._name}")
    print(f"build: {sc.build_info()}")
    for name, ok in sa.backends().items():
        state = "available" if ok else "unavailable"
        if name == "cuda":
            built = "cuda on" in sc.build_info()
            state += f" (compiled {'in' if built else 'out'}; {sc.cuda_device_count()} device(s))"
        print(f"backend {name}: {state}")
    try:
        import torch
    except ImportError:
        print("torch: not installed (the numpy API works; the operator needs PyTorch)")
        return 0
    sa.torch_ops  # registers the operator
    print(f"torch {torch.__version__}: operator torch.ops.sparse_attention.attention_fwd "
          f"registered; torch CUDA {'available' if torch.cuda.is_available() else 'unavailable'}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sparse_attention")
    parser.add_argument("command", choices=["info"], help="info: versions and backends")
    parser.parse_args(argv)
    return info()


if __name__ == "__main__":
    sys.exit(main())
