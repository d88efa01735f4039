"""A minimal ctypes view of the libsparse model API (capi/include/sparse/{context,model}.h), just
enough for the PyTorch peer's equivalence check: contexts, model create / train step / evaluate /
save. Kept here, independent of the project's Python bindings, so the check depends only on the
C ABI. Every struct size is checked against the library's own sizeof at run time (the *_default
functions write struct_size)."""
import ctypes
import os


class Settings(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("backend", ctypes.c_int),
                ("num_threads", ctypes.c_int32), ("device_index", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("cuda_stream", ctypes.c_void_p),
                ("reserved", ctypes.c_uint8 * 64)]


class ModelConfig(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("seq_len", ctypes.c_int64),
                ("num_layers", ctypes.c_int32), ("d_model", ctypes.c_int32),
                ("num_heads", ctypes.c_int32), ("attention", ctypes.c_int),
                ("head_mode", ctypes.c_int), ("stride", ctypes.c_int64),
                ("summary", ctypes.c_int64), ("block_size", ctypes.c_int32),
                ("layer_cycle", ctypes.c_char * 16), ("half_qk", ctypes.c_int32),
                ("half_ff", ctypes.c_int32), ("dropout", ctypes.c_float),
                ("tied_embeddings", ctypes.c_int32), ("num_position_dims", ctypes.c_int32),
                ("position_shape", ctypes.c_int64 * 4), ("recompute", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("reserved", ctypes.c_uint8 * 64)]


class TrainConfig(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("optimizer", ctypes.c_int),
                ("learning_rate", ctypes.c_float), ("beta1", ctypes.c_float),
                ("beta2", ctypes.c_float), ("epsilon", ctypes.c_float),
                ("weight_decay", ctypes.c_float), ("warmup_steps", ctypes.c_int64),
                ("total_steps", ctypes.c_int64), ("clip_norm", ctypes.c_float),
                ("micro_batch", ctypes.c_int32), ("reserved", ctypes.c_uint8 * 64)]


class TrainStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("step", ctypes.c_int64),
                ("loss", ctypes.c_double), ("bits_per_dim", ctypes.c_double),
                ("grad_norm", ctypes.c_double), ("learning_rate", ctypes.c_double),
                ("tokens", ctypes.c_int64), ("seconds", ctypes.c_double),
                ("peak_activation_bytes", ctypes.c_int64)]


BACKEND_CPU = 1


class LibsparseError(RuntimeError):
    pass


class Library:
    def __init__(self, path):
        self.lib = lib = ctypes.CDLL(os.path.abspath(path))
        lib.sparse_last_error.restype = ctypes.c_char_p
        lib.sparse_status_string.restype = ctypes.c_char_p
        lib.sparse_status_string.argtypes = [ctypes.c_int]
        P = ctypes.POINTER
        sigs = {
            "sparse_settings_default": [P(Settings)],
            "sparse_context_create": [P(Settings), P(ctypes.c_void_p)],
            "sparse_model_config_default": [P(ModelConfig)],
            "sparse_model_config_preset": [ctypes.c_char_p, P(ModelConfig)],
            "sparse_train_config_default": [P(TrainConfig)],
            "sparse_model_create": [ctypes.c_void_p, P(ModelConfig), P(TrainConfig),
                                    P(ctypes.c_void_p)],
            "sparse_model_train_step": [ctypes.c_void_p, P(ctypes.c_uint8), ctypes.c_int64,
                                        P(TrainStats)],
            "sparse_model_evaluate": [ctypes.c_void_p, P(ctypes.c_uint8), ctypes.c_int64,
                                      P(ctypes.c_double)],
            "sparse_model_save": [ctypes.c_void_p, ctypes.c_char_p],
            "sparse_model_load": [ctypes.c_void_p, ctypes.c_char_p, P(ctypes.c_void_p)],
            "sparse_model_parameter_count": [ctypes.c_void_p, P(ctypes.c_int64)],
        }
        for name, args in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = ctypes.c_int
        lib.sparse_context_destroy.argtypes = [ctypes.c_void_p]
        lib.sparse_context_destroy.restype = None
        lib.sparse_model_destroy.argtypes = [ctypes.c_void_p]
        lib.sparse_model_destroy.restype = None
        # Struct layouts must match the library's.
        for struct, fill in ((Settings, lib.sparse_settings_default),
                             (ModelConfig, lib.sparse_model_config_default),
                             (TrainConfig, lib.sparse_train_config_default)):
            s = struct()
            self.check(fill(ctypes.byref(s)), fill.__name__)
            if s.struct_size != ctypes.sizeof(struct):
                raise LibsparseError(f"{struct.__name__}: library sizeof {s.struct_size} != "
                                     f"ctypes sizeof {ctypes.sizeof(struct)}")

    def check(self, status, what):
        if status != 0:
            raise LibsparseError(f"{what}: {self.lib.sparse_status_string(status).decode()}: "
                                 f"{self.lib.sparse_last_error().decode()}")

    def context(self, threads):
        s = Settings()
        self.check(self.lib.sparse_settings_default(ctypes.byref(s)), "settings")
        s.backend = BACKEND_CPU
        s.num_threads = threads
        ctx = ctypes.c_void_p()
        self.check(self.lib.sparse_context_create(ctypes.byref(s), ctypes.byref(ctx)), "context")
        return ctx

    def model_config(self, preset=None, **fields):
        c = ModelConfig()
        if preset:
            self.check(self.lib.sparse_model_config_preset(preset.encode(), ctypes.byref(c)),
                       "preset")
        else:
            self.check(self.lib.sparse_model_config_default(ctypes.byref(c)), "config")
        for key, value in fields.items():
            if key == "layer_cycle":
                c.layer_cycle = value.encode()
            elif key == "position_shape":
                c.num_position_dims = len(value)
                for k in range(4):
                    c.position_shape[k] = value[k] if k < len(value) else 0
            else:
                setattr(c, key, value)
        return c

    def train_config(self, **fields):
        t = TrainConfig()
        self.check(self.lib.sparse_train_config_default(ctypes.byref(t)), "train config")
        for key, value in fields.items():
            setattr(t, key, value)
        return t

    def create_model(self, ctx, config, train):
        m = ctypes.c_void_p()
        self.check(self.lib.sparse_model_create(ctx, ctypes.byref(config), ctypes.byref(train),
                                                ctypes.byref(m)), "model create")
        return m

    @staticmethod
    def _tokens(data):
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(bytes(data))
        return buf

    def train_step(self, model, data, batch):
        stats = TrainStats()
        stats.struct_size = ctypes.sizeof(TrainStats)
        buf = self._tokens(data)
        self.check(self.lib.sparse_model_train_step(model, buf, batch, ctypes.byref(stats)),
                   "train step")
        return stats

    def evaluate(self, model, data, batch):
        bpd = ctypes.c_double()
        buf = self._tokens(data)
        self.check(self.lib.sparse_model_evaluate(model, buf, batch, ctypes.byref(bpd)),
                   "evaluate")
        return bpd.value

    def save(self, model, path):
        self.check(self.lib.sparse_model_save(model, str(path).encode()), "save")

    def load(self, ctx, path):
        m = ctypes.c_void_p()
        self.check(self.lib.sparse_model_load(ctx, str(path).encode(), ctypes.byref(m)), "load")
        return m

    def destroy_model(self, model):
        self.lib.sparse_model_destroy(model)

    def destroy_context(self, ctx):
        self.lib.sparse_context_destroy(ctx)
