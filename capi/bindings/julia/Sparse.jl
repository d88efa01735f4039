"""
    Sparse

Julia bindings to libsparse (Sparse Transformer block-sparse attention) over its C ABI
(`capi/include/sparse/*.h`), with `ccall` wrappers, finalizers and errors as exceptions.

    include("capi/bindings/julia/Sparse.jl"); using .Sparse
    ctx = Sparse.Context(:cpu)
    layout = Sparse.Layout(256, [Sparse.strided_row(16; head=0), Sparse.strided_column(16; head=1)];
                           heads=2, block_size=32)
    q, k, v = (randn(Float32, 64, 256, 2, 1) for _ in 1:3)   # (head_dim, seq_len, heads, batch)
    out, lse = Sparse.attention_forward(ctx, layout, q, k, v)

Arrays are column-major, so a Julia array of size (head_dim, seq_len, heads, batch) is the C
tensor [batch, heads, seq_len, head_dim]: every descriptor uses the reversed size and strides of
the array (any strided array with positive strides works, e.g. a `PermutedDimsArray`).

The library is `ENV["SPARSE_LIBRARY"]` (a path) when set at load time, else `libsparse.so.0`
from the loader's search path. Every failing call throws `SparseError(status, message)` with the
library's status code and `sparse_last_error()` message.

Julia is not installable on the machines this project's CI runs on: the module is checked there
by capi/bindings/check_bindings.py (every `ccall` names an exported function with the arity and
argument types of its C prototype; every struct mirror has the compiled C layout). test/runtests.jl
runs wherever Julia is.
"""
module Sparse

export SparseError, Context, Layout, Buffer, attention_forward, attention_backward,
       attention_forward!, attention_backward!

const libsparse = get(ENV, "SPARSE_LIBRARY", "libsparse.so.0")
const API_VERSION_MAJOR = 0
const TENSOR_MAX_DIMS = 8

# ------------------------------------------------------------------ status codes and errors

const OK = Cint(0)
const ERR_INVALID_ARGUMENT = Cint(-1)
const ERR_OUT_OF_MEMORY = Cint(-2)
const ERR_UNSUPPORTED = Cint(-3)
const ERR_DEVICE = Cint(-4)
const ERR_IO = Cint(-5)
const ERR_FORMAT = Cint(-6)
const ERR_INTERNAL = Cint(-7)
const ERR_BUFFER_TOO_SMALL = Cint(-8)

const DTYPE_F32 = Cint(0)
const DTYPE_F16 = Cint(1)
const DTYPE_BF16 = Cint(2)
const DTYPE_F64 = Cint(3)
const MEMORY_HOST = Cint(0)
const MEMORY_DEVICE = Cint(1)
const BACKEND_AUTO = Cint(0)
const BACKEND_CPU = Cint(1)
const BACKEND_CUDA = Cint(2)

const PATTERN_KINDS = (:dense, :local, :strided_row, :strided_column, :fixed_block,
                       :fixed_summary, :sliding_window, :longformer, :bigbird)

"A failed libsparse call: the status code and the library's message."
struct SparseError <: Exception
    status::Cint
    message::String
end

function Base.showerror(io::IO, e::SparseError)
    print(io, "SparseError(", status_string(e.status), " (", e.status, ")): ", e.message)
end

last_error() = unsafe_string(ccall((:sparse_last_error, libsparse), Cstring, ()))
clear_error() = ccall((:sparse_clear_error, libsparse), Cvoid, ())
status_string(s::Integer) =
    unsafe_string(ccall((:sparse_status_string, libsparse), Cstring, (Cint,), s))
version() = unsafe_string(ccall((:sparse_version_string, libsparse), Cstring, ()))
api_version() = ccall((:sparse_api_version, libsparse), UInt32, ())
build_info() = unsafe_string(ccall((:sparse_build_info, libsparse), Cstring, ()))
dtype_size(dtype::Integer) = ccall((:sparse_dtype_size, libsparse), Csize_t, (Cint,), dtype)

"Throws a SparseError for a non-zero status."
function check(status::Cint)
    status == OK || throw(SparseError(status, last_error()))
    return nothing
end

# ------------------------------------------------------------------ struct mirrors (exact C layouts)

"Returns a copy of the immutable struct `x` with the fields in `kw` replaced."
function with(x::T; kw...) where {T}
    T((haskey(kw, f) ? convert(fieldtype(T, f), kw[f]) : getfield(x, f) for f in fieldnames(T))...)
end

# C: sparse_tensor
struct SparseTensor
    data::Ptr{Cvoid}
    dtype::Cint
    memory::Cint
    device::Int32
    ndim::Int32
    shape::NTuple{8,Int64}
    strides::NTuple{8,Int64}
end

# C: sparse_settings
struct Settings
    struct_size::UInt32
    backend::Cint
    num_threads::Int32
    device_index::Int32
    seed::UInt64
    cuda_stream::Ptr{Cvoid}
    reserved::NTuple{64,UInt8}
end

# C: sparse_pattern
struct PatternC
    kind::Cint
    head::Int32
    window::Int64
    stride::Int64
    summary::Int64
    summary_variants::Int32
    causal::Int32
    global_tokens::Ptr{Int64}
    num_global_tokens::Int64
    random_blocks::Int64
    seed::UInt64
end

# C: sparse_layout_desc
struct LayoutDesc
    struct_size::UInt32
    seq_len::Int64
    block_size::Int32
    num_heads::Int32
    patterns::Ptr{PatternC}
    num_patterns::Int32
    pattern_struct_size::UInt32
    transpose_strided_column::Int32
    reserved::NTuple{60,UInt8}
end

# C: sparse_layout_stats
struct LayoutStats
    struct_size::UInt32
    seq_len::Int64
    block_size::Int32
    num_heads::Int32
    transposed::Int32
    num_blocks::Int64
    nnz_blocks::Int64
    full_blocks::Int64
    dense_blocks::Int64
    useful_elements::Int64
    computed_elements::Int64
    density::Cdouble
    effective_density::Cdouble
    memory_bytes::Csize_t
end

# C: sparse_attention_params
struct AttentionParams
    struct_size::UInt32
    scale::Cfloat
    algorithm::Cint
    reserved::NTuple{56,UInt8}
end

"sparse_attention_algorithm values."
const ATTENTION_FUSED = Cint(0)
const ATTENTION_UNFUSED = Cint(1)

zval(::Type{T}) where {T<:Number} = zero(T)
zval(::Type{Ptr{T}}) where {T} = Ptr{T}(C_NULL)
zval(::Type{NTuple{N,T}}) where {N,T} = ntuple(_ -> zval(T), N)
"A Ref to an all-zero instance of the struct mirror T (then filled by a *_default call)."
zeroed(::Type{T}) where {T} = Ref{T}(T((zval(fieldtype(T, f)) for f in fieldnames(T))...))

# ------------------------------------------------------------------ backends and contexts

backend_value(b::Integer) = Cint(b)
function backend_value(b::Union{Symbol,AbstractString})
    out = Ref{Cint}(0)
    check(ccall((:sparse_backend_from_name, libsparse), Cint, (Cstring, Ref{Cint}), string(b), out))
    return out[]
end

backend_name(b) =
    unsafe_string(ccall((:sparse_backend_name, libsparse), Cstring, (Cint,), backend_value(b)))

function backend_available(b)
    out = Ref{Cint}(0)
    check(ccall((:sparse_backend_available, libsparse), Cint, (Cint, Ref{Cint}),
                backend_value(b), out))
    return out[] != 0
end

function cuda_device_count()
    out = Ref{Cint}(0)
    check(ccall((:sparse_cuda_device_count, libsparse), Cint, (Ref{Cint},), out))
    return Int(out[])
end

"""A compute context (backend, threads, seed); freed by its finalizer or `close`. Memory of its
`Buffer`s must be freed before the C context is destroyed: `close` with buffers still open
defers the destroy to the last one's `close`."""
mutable struct Context
    ptr::Ptr{Cvoid}
    device::Int32  # device ordinal of the memory `Buffer` allocates: device_index on CUDA, else 0
    open_buffers::Int
    closing::Ptr{Cvoid}  # the C context after `close`, while buffers are open
    function Context(backend=:auto; num_threads::Integer=0, device_index::Integer=0,
                     seed::Union{Nothing,Integer}=nothing)
        s = zeroed(Settings)
        check(ccall((:sparse_settings_default, libsparse), Cint, (Ref{Settings},), s))
        s[] = with(s[]; backend=backend_value(backend), num_threads=num_threads,
                   device_index=device_index)
        seed === nothing || (s[] = with(s[]; seed=seed))
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:sparse_context_create, libsparse), Cint, (Ref{Settings}, Ref{Ptr{Cvoid}}),
                    s, out))
        ctx = new(out[], Int32(0), 0, C_NULL)
        finalizer(close, ctx)
        memory(ctx) == MEMORY_DEVICE && (ctx.device = Int32(device_index))
        return ctx
    end
end

function Base.close(ctx::Context)
    if ctx.ptr != C_NULL && ctx.open_buffers > 0
        ctx.closing = ctx.ptr
    elseif ctx.ptr != C_NULL
        ccall((:sparse_context_destroy, libsparse), Cvoid, (Ptr{Cvoid},), ctx.ptr)
    end
    ctx.ptr = C_NULL
    return nothing
end

function handle(ctx::Context)
    ctx.ptr == C_NULL && throw(ArgumentError("the Context is closed"))
    return ctx.ptr
end

function backend(ctx::Context)
    out = Ref{Cint}(0)
    check(ccall((:sparse_context_backend, libsparse), Cint, (Ptr{Cvoid}, Ref{Cint}),
                handle(ctx), out))
    return Symbol(backend_name(out[]))
end

function num_threads(ctx::Context)
    out = Ref{Int32}(0)
    check(ccall((:sparse_context_num_threads, libsparse), Cint, (Ptr{Cvoid}, Ref{Int32}),
                handle(ctx), out))
    return Int(out[])
end

synchronize(ctx::Context) =
    check(ccall((:sparse_context_synchronize, libsparse), Cint, (Ptr{Cvoid},), handle(ctx)))

function memory(ctx::Context)
    out = Ref{Cint}(0)
    check(ccall((:sparse_context_memory, libsparse), Cint, (Ptr{Cvoid}, Ref{Cint}),
                handle(ctx), out))
    return out[]
end

"Memory from `sparse_context_alloc` (device memory on a CUDA context); freed by its finalizer."
mutable struct Buffer
    ctx::Context
    ptr::Ptr{Cvoid}
    bytes::Int
    memory::Cint
    function Buffer(ctx::Context, bytes::Integer)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:sparse_context_alloc, libsparse), Cint, (Ptr{Cvoid}, Csize_t, Ref{Ptr{Cvoid}}),
                    handle(ctx), bytes, out))
        b = new(ctx, out[], Int(bytes), memory(ctx))
        b.ptr != C_NULL && (ctx.open_buffers += 1)
        finalizer(close, b)
        return b
    end
end

"Frees the memory (idempotent); after the Context's `close`, also destroys it if this was its last."
function Base.close(b::Buffer)
    b.ptr == C_NULL && return nothing
    ctx = b.ctx
    c = ctx.ptr != C_NULL ? ctx.ptr : ctx.closing
    ccall((:sparse_context_free, libsparse), Cvoid, (Ptr{Cvoid}, Ptr{Cvoid}), c, b.ptr)
    b.ptr = C_NULL
    ctx.open_buffers -= 1
    if ctx.open_buffers == 0 && ctx.closing != C_NULL
        ccall((:sparse_context_destroy, libsparse), Cvoid, (Ptr{Cvoid},), ctx.closing)
        ctx.closing = C_NULL
    end
    return nothing
end

function copy_bytes(b::Buffer, dst::Ptr, dst_mem::Cint, src::Ptr, src_mem::Cint)
    check(ccall((:sparse_context_copy, libsparse), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Cint, Ptr{Cvoid}, Cint, Csize_t),
                handle(b.ctx), dst, dst_mem, src, src_mem, b.bytes))
end

"Copies a dense array of exactly `b.bytes` bytes into the buffer."
function Base.copyto!(b::Buffer, a::DenseArray)
    sizeof(a) == b.bytes || throw(ArgumentError("array has $(sizeof(a)) bytes, buffer $(b.bytes)"))
    GC.@preserve a copy_bytes(b, b.ptr, b.memory, pointer(a), MEMORY_HOST)
    return b
end

"Copies the buffer into a dense array of exactly `b.bytes` bytes."
function Base.copyto!(a::DenseArray, b::Buffer)
    sizeof(a) == b.bytes || throw(ArgumentError("array has $(sizeof(a)) bytes, buffer $(b.bytes)"))
    GC.@preserve a copy_bytes(b, pointer(a), MEMORY_HOST, b.ptr, b.memory)
    return a
end

# ------------------------------------------------------------------ tensors

dtype_of(::Type{Float32}) = DTYPE_F32
dtype_of(::Type{Float64}) = DTYPE_F64
dtype_of(::Type{Float16}) = DTYPE_F16
dtype_of(::Type{T}) where {T} = throw(ArgumentError("element type $T has no sparse_dtype"))

pad8(t) = ntuple(i -> i <= length(t) ? Int64(t[i]) : Int64(0), 8)

"The descriptor of a strided host array (C shape and strides = reversed Julia ones)."
function tensor(a::StridedArray{T}) where {T}
    N = ndims(a)
    1 <= N <= TENSOR_MAX_DIMS || throw(ArgumentError("$N dimensions: must be 1 to 8"))
    st = strides(a)
    all(>=(0), st) || throw(ArgumentError("negative strides $(st) cannot be described"))
    SparseTensor(length(a) == 0 ? C_NULL : Ptr{Cvoid}(pointer(a)), dtype_of(T), MEMORY_HOST, 0,
                 N, pad8(reverse(size(a))), pad8(reverse(st)))
end

"The descriptor of a row-major tensor of C shape `cshape` at the start of a buffer."
function tensor(b::Buffer, ::Type{T}, cshape) where {T}
    n = prod(cshape; init=1)
    n * sizeof(T) <= b.bytes || throw(ArgumentError("shape $(cshape) needs $(n * sizeof(T)) bytes, " *
                                                   "the buffer has $(b.bytes)"))
    st = zeros(Int64, length(cshape))
    acc = 1
    for i in length(cshape):-1:1
        st[i] = acc
        acc *= max(cshape[i], 1)
    end
    SparseTensor(b.ptr, dtype_of(T), b.memory, b.ctx.device, length(cshape), pad8(cshape),
                 pad8(st))
end

# ------------------------------------------------------------------ patterns and layouts

"One pattern (see layout.h): `kind` is one of PATTERN_KINDS; head -1 means every head."
Base.@kwdef struct Pattern
    kind::Symbol
    head::Int = -1
    window::Int = 0
    stride::Int = 0
    summary::Int = 0
    summary_variants::Int = 1
    causal::Bool = true
    global_tokens::Vector{Int64} = Int64[]
    random_blocks::Int = 0
    seed::UInt64 = 0
end

dense(; head=-1, causal=true) = Pattern(kind=:dense, head=head, causal=causal)
local_window(w; head=-1) = Pattern(kind=:local, window=w, head=head)
strided_row(l; head=-1) = Pattern(kind=:strided_row, stride=l, head=head)
strided_column(l; head=-1) = Pattern(kind=:strided_column, stride=l, head=head)
fixed_block(l; head=-1) = Pattern(kind=:fixed_block, stride=l, head=head)
fixed_summary(l, c; head=-1, summary_variants=1) =
    Pattern(kind=:fixed_summary, stride=l, summary=c, head=head, summary_variants=summary_variants)
sliding_window(w; head=-1, causal=true) =
    Pattern(kind=:sliding_window, window=w, head=head, causal=causal)
longformer(w, globals; head=-1, causal=true) =
    Pattern(kind=:longformer, window=w, global_tokens=Int64.(globals), head=head, causal=causal)
bigbird(w, globals, random_blocks, seed; head=-1, causal=true) =
    Pattern(kind=:bigbird, window=w, global_tokens=Int64.(globals), random_blocks=random_blocks,
            seed=seed, head=head, causal=causal)

function kind_value(kind::Symbol)
    out = Ref{Cint}(0)
    check(ccall((:sparse_pattern_kind_from_name, libsparse), Cint, (Cstring, Ref{Cint}),
                string(kind), out))
    return out[]
end

kind_name(kind::Integer) =
    unsafe_string(ccall((:sparse_pattern_kind_name, libsparse), Cstring, (Cint,), kind))

# The raw struct; points into p.global_tokens (keep `p` alive while it is used).
function raw(p::Pattern)
    r = zeroed(PatternC)
    check(ccall((:sparse_pattern_default, libsparse), Cint, (Ref{PatternC}, Cint), r,
                kind_value(p.kind)))
    with(r[]; head=p.head, window=p.window, stride=p.stride, summary=p.summary,
         summary_variants=p.summary_variants, causal=Int32(p.causal),
         global_tokens=isempty(p.global_tokens) ? Ptr{Int64}(C_NULL) : pointer(p.global_tokens),
         num_global_tokens=length(p.global_tokens), random_blocks=p.random_blocks, seed=p.seed)
end

"A block layout built from patterns; freed by its finalizer or `close`."
mutable struct Layout
    ptr::Ptr{Cvoid}
    seq_len::Int
    num_heads::Int
    block_size::Int
    function Layout(ptr::Ptr{Cvoid}, seq_len, heads, block)
        l = new(ptr, seq_len, heads, block)
        finalizer(close, l)
        return l
    end
end

function Layout(seq_len::Integer, patterns::AbstractVector{Pattern}; heads::Integer=1,
                block_size::Integer=64, transpose_strided_column::Bool=true)
    raws = PatternC[]
    GC.@preserve patterns begin
        raws = [raw(p) for p in patterns]
        d = zeroed(LayoutDesc)
        check(ccall((:sparse_layout_desc_default, libsparse), Cint, (Ref{LayoutDesc},), d))
        out = Ref{Ptr{Cvoid}}(C_NULL)
        GC.@preserve raws begin
            d[] = with(d[]; seq_len=seq_len, block_size=block_size, num_heads=heads,
                       patterns=isempty(raws) ? Ptr{PatternC}(C_NULL) : pointer(raws),
                       num_patterns=length(raws),
                       transpose_strided_column=Int32(transpose_strided_column))
            check(ccall((:sparse_layout_create, libsparse), Cint,
                        (Ref{LayoutDesc}, Ref{Ptr{Cvoid}}), d, out))
        end
    end
    return Layout(out[], seq_len, heads, block_size)
end

Layout(seq_len::Integer, p::Pattern; kw...) = Layout(seq_len, [p]; kw...)

"""
    Layout(seq_len, block_size, block_mask; element_mask=nothing, causal=false)

From a user block mask: `block_mask` is a UInt8 array of C shape [heads, nb, nb], i.e. a Julia
array of size (nb, nb, heads) with `block_mask[J+1, I+1, h+1]` for query block I and key block J.
"""
function Layout(seq_len::Integer, block_size::Integer, block_mask::Array{UInt8,3};
                element_mask::Union{Nothing,Vector{UInt8}}=nothing, causal::Bool=false)
    nb = cld(seq_len, block_size)
    size(block_mask)[1:2] == (nb, nb) ||
        throw(ArgumentError("block_mask must be (nb, nb, heads) with nb = $nb"))
    if element_mask !== nothing
        need = count(!=(0), block_mask) * block_size^2
        length(element_mask) == need ||
            throw(ArgumentError("element_mask has $(length(element_mask)) bytes, needs $need"))
    end
    heads = size(block_mask, 3)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    em = element_mask === nothing ? Ptr{UInt8}(C_NULL) : pointer(element_mask)
    GC.@preserve block_mask element_mask begin
        check(ccall((:sparse_layout_create_from_blocks, libsparse), Cint,
                    (Int64, Int32, Int32, Ptr{UInt8}, Ptr{UInt8}, Int32, Ref{Ptr{Cvoid}}),
                    seq_len, block_size, heads, pointer(block_mask), em, Int32(causal), out))
    end
    return Layout(out[], seq_len, heads, block_size)
end

function Base.close(l::Layout)
    if l.ptr != C_NULL
        ccall((:sparse_layout_destroy, libsparse), Cvoid, (Ptr{Cvoid},), l.ptr)
        l.ptr = C_NULL
    end
    return nothing
end

function handle(l::Layout)
    l.ptr == C_NULL && throw(ArgumentError("the Layout is closed"))
    return l.ptr
end

"Statistics of head `head` (0-based), or of all heads for -1."
function stats(l::Layout, head::Integer=-1)
    s = zeroed(LayoutStats)
    s[] = with(s[]; struct_size=sizeof(LayoutStats))
    check(ccall((:sparse_layout_get_stats, libsparse), Cint, (Ptr{Cvoid}, Int32, Ref{LayoutStats}),
                handle(l), head, s))
    return s[]
end

"Block mask of `head` in computed order: an nb x nb matrix m[J+1, I+1] (C row-major [I, J])."
function block_mask(l::Layout, head::Integer)
    nb = stats(l, head).num_blocks
    out = zeros(UInt8, nb, nb)
    check(ccall((:sparse_layout_block_mask, libsparse), Cint, (Ptr{Cvoid}, Int32, Ptr{UInt8}, Csize_t),
                handle(l), head, out, length(out)))
    return out
end

"Keys (0-based positions j, as a Bool vector indexed j+1) that query `query` of `head` attends to."
function row_mask(l::Layout, head::Integer, query::Integer)
    out = zeros(UInt8, l.seq_len)
    check(ccall((:sparse_layout_row_mask, libsparse), Cint,
                (Ptr{Cvoid}, Int32, Int64, Ptr{UInt8}, Csize_t), handle(l), head, query, out,
                length(out)))
    return out .!= 0
end

# ------------------------------------------------------------------ attention

function params_ref(scale::Real)
    p = zeroed(AttentionParams)
    check(ccall((:sparse_attention_params_default, libsparse), Cint, (Ref{AttentionParams},), p))
    p[] = with(p[]; scale=Float32(scale))
    return p
end

function check_shapes(l::Layout, named...)
    ref = size(named[1][2])
    ndims(named[1][2]) == 4 ||
        throw(ArgumentError("q must be 4-D (head_dim, seq_len, heads, batch), got $ref"))
    (ref[2], ref[3]) == (l.seq_len, l.num_heads) ||
        throw(ArgumentError("q has size $ref; the layout has seq_len $(l.seq_len), " *
                            "$(l.num_heads) heads"))
    for (name, a) in named
        size(a) == ref || throw(ArgumentError("$name has size $(size(a)), q has $ref"))
    end
end

"""
    attention_forward!(ctx, layout, out, lse, q, k, v; scale=0)

Block-sparse attention of (head_dim, seq_len, heads, batch) arrays into `out`; `lse` is a
(seq_len, heads, batch) Float32 array or `nothing`. scale 0 means 1/sqrt(head_dim).
"""
function attention_forward!(ctx::Context, l::Layout, out::StridedArray{T,4},
                            lse::Union{Nothing,StridedArray{Float32,3}}, q::StridedArray{T,4},
                            k::StridedArray{T,4}, v::StridedArray{T,4}; scale::Real=0) where {T}
    check_shapes(l, ("q", q), ("k", k), ("v", v), ("out", out))
    lse === nothing || size(lse) == size(q)[2:4] ||
        throw(ArgumentError("lse has size $(size(lse)), expected $(size(q)[2:4])"))
    p = params_ref(scale)
    tq, tk, tv, to = Ref(tensor(q)), Ref(tensor(k)), Ref(tensor(v)), Ref(tensor(out))
    tl = lse === nothing ? nothing : Ref(tensor(lse))
    GC.@preserve q k v out lse begin
        if tl === nothing
            check(ccall((:sparse_attention_forward, libsparse), Cint,
                        (Ptr{Cvoid}, Ptr{Cvoid}, Ref{AttentionParams}, Ref{SparseTensor},
                         Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}, Ptr{SparseTensor}),
                        handle(ctx), handle(l), p, tq, tk, tv, to, C_NULL))
        else
            check(ccall((:sparse_attention_forward, libsparse), Cint,
                        (Ptr{Cvoid}, Ptr{Cvoid}, Ref{AttentionParams}, Ref{SparseTensor},
                         Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}),
                        handle(ctx), handle(l), p, tq, tk, tv, to, tl))
        end
    end
    return out, lse
end

"Allocating forward pass: returns (out, lse)."
function attention_forward(ctx::Context, l::Layout, q::StridedArray{T,4}, k, v;
                           scale::Real=0) where {T}
    out = similar(q, T, size(q))
    lse = Array{Float32}(undef, size(q)[2:4])
    return attention_forward!(ctx, l, out, lse, q, k, v; scale=scale)
end

"Gradients of the forward pass (same scale) into dq, dk, dv."
function attention_backward!(ctx::Context, l::Layout, dq::StridedArray{T,4}, dk::StridedArray{T,4},
                             dv::StridedArray{T,4}, q::StridedArray{T,4}, k::StridedArray{T,4},
                             v::StridedArray{T,4}, out::StridedArray{T,4},
                             lse::StridedArray{Float32,3}, dout::StridedArray{T,4};
                             scale::Real=0) where {T}
    check_shapes(l, ("q", q), ("k", k), ("v", v), ("out", out), ("dout", dout), ("dq", dq),
                 ("dk", dk), ("dv", dv))
    size(lse) == size(q)[2:4] ||
        throw(ArgumentError("lse has size $(size(lse)), expected $(size(q)[2:4])"))
    p = params_ref(scale)
    t = [Ref(tensor(a)) for a in (q, k, v, out, lse, dout, dq, dk, dv)]
    GC.@preserve q k v out lse dout dq dk dv begin
        check(ccall((:sparse_attention_backward, libsparse), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ref{AttentionParams}, Ref{SparseTensor},
                     Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor},
                     Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}, Ref{SparseTensor}),
                    handle(ctx), handle(l), p, t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8],
                    t[9]))
    end
    return dq, dk, dv
end

"Allocating backward pass: returns (dq, dk, dv)."
function attention_backward(ctx::Context, l::Layout, q::StridedArray{T,4}, k, v, out, lse, dout;
                            scale::Real=0) where {T}
    dq, dk, dv = (similar(q, T, size(q)) for _ in 1:3)
    return attention_backward!(ctx, l, dq, dk, dv, q, k, v, out, lse, dout; scale=scale)
end

function workspace_size(ctx::Context, l::Layout, batch::Integer, head_dim::Integer;
                        backward::Bool=false, algorithm::Integer=ATTENTION_FUSED)
    out = Ref{Csize_t}(0)
    if algorithm == ATTENTION_FUSED
        check(ccall((:sparse_attention_workspace_size, libsparse), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Int64, Int64, Int32, Ref{Csize_t}),
                    handle(ctx), handle(l), batch, head_dim, Int32(backward), out))
    else
        p = params_ref(0)
        p[] = with(p[]; algorithm=Cint(algorithm))
        check(ccall((:sparse_attention_workspace_size_params, libsparse), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ref{AttentionParams}, Int64, Int64, Int32,
                     Ref{Csize_t}),
                    handle(ctx), handle(l), p, batch, head_dim, Int32(backward), out))
    end
    return Int(out[])
end

"A row-major C tensor descriptor through the library (for tests of the descriptor layout)."
function tensor_contiguous(data::Ptr, dtype::Integer, cshape::Vector{Int64})
    t = zeroed(SparseTensor)
    check(ccall((:sparse_tensor_contiguous, libsparse), Cint,
                (Ref{SparseTensor}, Ptr{Cvoid}, Cint, Int32, Ptr{Int64}),
                t, data, dtype, length(cshape), cshape))
    return t[]
end

# ------------------------------------------------------------------ model (model.h)

# C: sparse_model_config
struct ModelConfig
    struct_size::UInt32
    seq_len::Int64
    num_layers::Int32
    d_model::Int32
    num_heads::Int32
    attention::Cint
    head_mode::Cint
    stride::Int64
    summary::Int64
    block_size::Int32
    layer_cycle::NTuple{16,UInt8}
    half_qk::Int32
    half_ff::Int32
    dropout::Cfloat
    tied_embeddings::Int32
    num_position_dims::Int32
    position_shape::NTuple{4,Int64}
    recompute::Int32
    seed::UInt64
    output_init_std::Cfloat
    row_attention::Cint
    summary_variants::Int32
    reserved::NTuple{52,UInt8}
end

# C: sparse_train_config
struct TrainConfig
    struct_size::UInt32
    optimizer::Cint
    learning_rate::Cfloat
    beta1::Cfloat
    beta2::Cfloat
    epsilon::Cfloat
    weight_decay::Cfloat
    warmup_steps::Int64
    total_steps::Int64
    clip_norm::Cfloat
    micro_batch::Int32
    dtype::Cint
    loss_scale::Cfloat
    loss_scale_window::Int32
    reserved::NTuple{52,UInt8}
end

# C: sparse_train_stats
struct TrainStats
    struct_size::UInt32
    step::Int64
    loss::Cdouble
    bits_per_dim::Cdouble
    grad_norm::Cdouble
    learning_rate::Cdouble
    tokens::Int64
    seconds::Cdouble
    peak_activation_bytes::Int64
    loss_scale::Cdouble
    skipped_steps::Int64
end

# C: sparse_sample_params
struct SampleParams
    struct_size::UInt32
    temperature::Cfloat
    seed::UInt64
    reserved::NTuple{32,UInt8}
end

"The default model configuration, or a preset (\"cifar10\", \"enwik8-small\", ...), with `kw` fields changed."
function model_config(preset::Union{Nothing,AbstractString}=nothing; kw...)
    c = zeroed(ModelConfig)
    if preset === nothing
        check(ccall((:sparse_model_config_default, libsparse), Cint, (Ref{ModelConfig},), c))
    else
        check(ccall((:sparse_model_config_preset, libsparse), Cint, (Cstring, Ref{ModelConfig}),
                    preset, c))
    end
    return with(c[]; kw...)
end

"The default trainer configuration with `kw` fields changed."
function train_config(; kw...)
    t = zeroed(TrainConfig)
    check(ccall((:sparse_train_config_default, libsparse), Cint, (Ref{TrainConfig},), t))
    return with(t[]; kw...)
end

function parameter_count(c::ModelConfig)
    n = Ref{Int64}(0)
    check(ccall((:sparse_model_config_parameter_count, libsparse), Cint,
                (Ref{ModelConfig}, Ref{Int64}), c, n))
    return Int(n[])
end

"A model with its optimiser state; keeps its Context alive; freed by its finalizer or `close`."
mutable struct Model
    ptr::Ptr{Cvoid}
    ctx::Context
    seq_len::Int
    function Model(ptr::Ptr{Cvoid}, ctx::Context)
        m = new(ptr, ctx, 0)
        finalizer(close, m)
        m.seq_len = config(m).seq_len
        return m
    end
end

function Model(ctx::Context, c::ModelConfig=model_config(), t::Union{Nothing,TrainConfig}=nothing)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    tr = t === nothing ? Ptr{TrainConfig}(C_NULL) : Ref(t)
    check(ccall((:sparse_model_create, libsparse), Cint,
                (Ptr{Cvoid}, Ref{ModelConfig}, Ptr{TrainConfig}, Ref{Ptr{Cvoid}}),
                handle(ctx), c, tr, out))
    return Model(out[], ctx)
end

"A model from a checkpoint written by `save`."
function load_model(ctx::Context, path::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:sparse_model_load, libsparse), Cint, (Ptr{Cvoid}, Cstring, Ref{Ptr{Cvoid}}),
                handle(ctx), path, out))
    return Model(out[], ctx)
end

function Base.close(m::Model)
    if m.ptr != C_NULL
        ccall((:sparse_model_destroy, libsparse), Cvoid, (Ptr{Cvoid},), m.ptr)
        m.ptr = C_NULL
    end
    return nothing
end

function handle(m::Model)
    m.ptr == C_NULL && throw(ArgumentError("the Model is closed"))
    return m.ptr
end

function config(m::Model)
    c = zeroed(ModelConfig)
    check(ccall((:sparse_model_get_config, libsparse), Cint, (Ptr{Cvoid}, Ref{ModelConfig}),
                handle(m), c))
    return c[]
end

function train_config(m::Model)
    t = zeroed(TrainConfig)
    check(ccall((:sparse_model_get_train_config, libsparse), Cint, (Ptr{Cvoid}, Ref{TrainConfig}),
                handle(m), t))
    return t[]
end

function parameter_count(m::Model)
    n = Ref{Int64}(0)
    check(ccall((:sparse_model_parameter_count, libsparse), Cint, (Ptr{Cvoid}, Ref{Int64}),
                handle(m), n))
    return Int(n[])
end

function model_step(m::Model)
    n = Ref{Int64}(0)
    check(ccall((:sparse_model_step, libsparse), Cint, (Ptr{Cvoid}, Ref{Int64}), handle(m), n))
    return Int(n[])
end

# tokens: a (seq_len, batch) UInt8 matrix (column-major: sequence after sequence), or a vector.
# A (batch, seq_len) matrix has the same length but interleaves the sequences: refused.
function batch_of(m::Model, tokens::DenseArray{UInt8})
    (ndims(tokens) == 1 || (ndims(tokens) == 2 && size(tokens, 1) == m.seq_len)) ||
        throw(ArgumentError("tokens of size $(size(tokens)): expected a vector of whole " *
                            "sequences or a (seq_len = $(m.seq_len), batch) matrix"))
    (length(tokens) > 0 && length(tokens) % m.seq_len == 0) ||
        throw(ArgumentError("$(length(tokens)) tokens are not whole sequences of $(m.seq_len)"))
    return length(tokens) ÷ m.seq_len
end

"One optimiser step on `tokens` ((seq_len, batch) UInt8); returns the TrainStats."
function train_step!(m::Model, tokens::DenseArray{UInt8})
    batch = batch_of(m, tokens)
    s = zeroed(TrainStats)
    s[] = with(s[]; struct_size=sizeof(TrainStats))
    GC.@preserve tokens check(ccall((:sparse_model_train_step, libsparse), Cint,
                                    (Ptr{Cvoid}, Ptr{UInt8}, Int64, Ref{TrainStats}),
                                    handle(m), tokens, batch, s))
    return s[]
end

"Mean bits per dim on `tokens` without dropout (the model is not changed)."
function evaluate(m::Model, tokens::DenseArray{UInt8})
    batch = batch_of(m, tokens)
    bpd = Ref{Cdouble}(0)
    GC.@preserve tokens check(ccall((:sparse_model_evaluate, libsparse), Cint,
                                    (Ptr{Cvoid}, Ptr{UInt8}, Int64, Ref{Cdouble}),
                                    handle(m), tokens, batch, bpd))
    return bpd[]
end

"Bits of each token given the earlier ones of its sequence, shaped like `tokens` (their mean is
`evaluate(m, tokens)`; the model is not changed)."
function token_bits(m::Model, tokens::DenseArray{UInt8})
    batch = batch_of(m, tokens)
    bits = zeros(Cdouble, size(tokens))
    GC.@preserve tokens bits check(ccall((:sparse_model_token_bits, libsparse), Cint,
                                         (Ptr{Cvoid}, Ptr{UInt8}, Int64, Ptr{Cdouble}, Csize_t),
                                         handle(m), tokens, batch, bits, length(bits)))
    return bits
end

function measure_memory(m::Model, tokens::DenseArray{UInt8})
    batch = batch_of(m, tokens)
    n = Ref{Int64}(0)
    GC.@preserve tokens check(ccall((:sparse_model_measure_memory, libsparse), Cint,
                                    (Ptr{Cvoid}, Ptr{UInt8}, Int64, Ref{Int64}),
                                    handle(m), tokens, batch, n))
    return Int(n[])
end

"`length` bytes: `prompt`, then sampled bytes (temperature 0 = greedy)."
function sample(m::Model, length::Integer; prompt::Vector{UInt8}=UInt8[],
                temperature::Union{Nothing,Real}=nothing, seed::Union{Nothing,Integer}=nothing)
    p = zeroed(SampleParams)
    check(ccall((:sparse_sample_params_default, libsparse), Cint, (Ref{SampleParams},), p))
    temperature === nothing || (p[] = with(p[]; temperature=temperature))
    seed === nothing || (p[] = with(p[]; seed=seed))
    out = zeros(UInt8, length)
    pp = isempty(prompt) ? Ptr{UInt8}(C_NULL) : pointer(prompt)
    GC.@preserve prompt check(ccall((:sparse_model_sample, libsparse), Cint,
                                    (Ptr{Cvoid}, Ref{SampleParams}, Ptr{UInt8}, Int64, Ptr{UInt8},
                                     Int64),
                                    handle(m), p, pp, Base.length(prompt), out, length))
    return out
end

save(m::Model, path::AbstractString) =
    check(ccall((:sparse_model_save, libsparse), Cint, (Ptr{Cvoid}, Cstring), handle(m), path))
restore!(m::Model, path::AbstractString) =
    check(ccall((:sparse_model_restore, libsparse), Cint, (Ptr{Cvoid}, Cstring), handle(m), path))

function progress_line(s::TrainStats, total_steps::Integer, elapsed::Real)
    buf = zeros(UInt8, 512)
    check(ccall((:sparse_train_progress_line, libsparse), Cint,
                (Ref{TrainStats}, Int64, Cdouble, Ptr{UInt8}, Csize_t),
                s, total_steps, elapsed, buf, Base.length(buf)))
    return unsafe_string(pointer(buf))
end

# ------------------------------------------------------------------ datasets (datasets.h)

# C: sparse_dataset_desc
struct DatasetDesc
    struct_size::UInt32
    kind::Cint
    path::Ptr{UInt8}
    split::Cint
    seq_len::Int64
    seed::UInt64
    shuffle::Int32
    vocab::Int32
    num_sequences::Int64
    image_width::Int32
    image_height::Int32
    noise_scale::Cdouble
    copy_offset::Int64
    copy_prob::Cdouble
    successor_bias::Cdouble
    sample_rate::Int32
    reserved0::Int32
    valid_fraction::Cdouble
    test_fraction::Cdouble
    reserved::NTuple{64,UInt8}
end

const SPLITS = (:train, :valid, :test)
const TOKENS_U8 = Cint(0)
const TOKENS_I32 = Cint(1)

function dataset_kind(kind::Union{Symbol,AbstractString})
    out = Ref{Cint}(0)
    check(ccall((:sparse_dataset_kind_from_name, libsparse), Cint, (Cstring, Ref{Cint}),
                string(kind), out))
    return out[]
end

dataset_kind_name(kind::Integer) =
    unsafe_string(ccall((:sparse_dataset_kind_name, libsparse), Cstring, (Cint,), kind))

"An open dataset split; freed by its finalizer or `close`."
mutable struct Dataset
    ptr::Ptr{Cvoid}
    seq_len::Int
end

"""
    Dataset(kind; path=nothing, split=:train, fields...)

Opens `kind` (:text, :enwik8, :cifar10, :synthetic_text, ...) with the library's defaults for
it, the `fields` of sparse_dataset_desc changed (seq_len=1024, shuffle=0, ...).
"""
function Dataset(kind; path::Union{Nothing,AbstractString}=nothing, split::Symbol=:train, kw...)
    d = zeroed(DatasetDesc)
    check(ccall((:sparse_dataset_desc_default, libsparse), Cint, (Ref{DatasetDesc}, Cint), d,
                dataset_kind(kind)))
    s = findfirst(==(split), SPLITS)
    s === nothing && throw(ArgumentError("split must be one of $(SPLITS)"))
    cpath = path === nothing ? nothing : Vector{UInt8}(string(path, '\0'))
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve cpath begin
        d[] = with(d[]; split=s - 1,
                   path=cpath === nothing ? Ptr{UInt8}(C_NULL) : pointer(cpath), kw...)
        check(ccall((:sparse_dataset_open, libsparse), Cint, (Ref{DatasetDesc}, Ref{Ptr{Cvoid}}),
                    d, out))
    end
    ds = Dataset(out[], 0)
    finalizer(close, ds)
    n = Ref{Int64}(0)
    check(ccall((:sparse_dataset_seq_len, libsparse), Cint, (Ptr{Cvoid}, Ref{Int64}), ds.ptr, n))
    ds.seq_len = Int(n[])
    return ds
end

function Base.close(d::Dataset)
    if d.ptr != C_NULL
        ccall((:sparse_dataset_destroy, libsparse), Cvoid, (Ptr{Cvoid},), d.ptr)
        d.ptr = C_NULL
    end
    return nothing
end

function handle(d::Dataset)
    d.ptr == C_NULL && throw(ArgumentError("the Dataset is closed"))
    return d.ptr
end

function num_sequences(d::Dataset)
    n = Ref{Int64}(0)
    check(ccall((:sparse_dataset_num_sequences, libsparse), Cint, (Ptr{Cvoid}, Ref{Int64}),
                handle(d), n))
    return Int(n[])
end

function vocab_size(d::Dataset)
    n = Ref{Int32}(0)
    check(ccall((:sparse_dataset_vocab_size, libsparse), Cint, (Ptr{Cvoid}, Ref{Int32}),
                handle(d), n))
    return Int(n[])
end

token_type(::Type{UInt8}) = TOKENS_U8
token_type(::Type{Int32}) = TOKENS_I32

"Sequences first:first+count-1 (0-based) as a (seq_len, count) matrix of T (UInt8 or Int32)."
function read_sequences(d::Dataset, first::Integer, count::Integer, ::Type{T}=UInt8) where {T}
    out = Matrix{T}(undef, d.seq_len, count)
    check(ccall((:sparse_dataset_read, libsparse), Cint,
                (Ptr{Cvoid}, Int64, Int64, Cint, Ptr{Cvoid}, Csize_t),
                handle(d), first, count, token_type(T), out, sizeof(out)))
    return out
end

"(tokens (seq_len, batch), 0-based indices) of the next batch of the seeded order."
function next_batch!(d::Dataset, batch::Integer, ::Type{T}=UInt8) where {T}
    out = Matrix{T}(undef, d.seq_len, batch)
    idx = zeros(Int64, batch)
    check(ccall((:sparse_dataset_next_batch, libsparse), Cint,
                (Ptr{Cvoid}, Int64, Cint, Ptr{Cvoid}, Csize_t, Ptr{Int64}),
                handle(d), batch, token_type(T), out, sizeof(out), idx))
    return out, idx
end

function dataset_position(d::Dataset)
    e, p = Ref{UInt64}(0), Ref{Int64}(0)
    check(ccall((:sparse_dataset_position, libsparse), Cint, (Ptr{Cvoid}, Ref{UInt64}, Ref{Int64}),
                handle(d), e, p))
    return Int(e[]), Int(p[])
end

seek!(d::Dataset, epoch::Integer, pos::Integer) =
    check(ccall((:sparse_dataset_seek, libsparse), Cint, (Ptr{Cvoid}, UInt64, Int64),
                handle(d), epoch, pos))

function label(d::Dataset, index::Integer)
    out = Ref{Int32}(0)
    check(ccall((:sparse_dataset_label, libsparse), Cint, (Ptr{Cvoid}, Int64, Ref{Int32}),
                handle(d), index, out))
    return Int(out[])
end

"Synthetic kinds: (exact entropy, mean -log2 p of the drawn tokens) in bits per token."
function entropy(d::Dataset)
    a, b = Ref{Cdouble}(0), Ref{Cdouble}(0)
    check(ccall((:sparse_dataset_entropy, libsparse), Cint, (Ptr{Cvoid}, Ref{Cdouble}, Ref{Cdouble}),
                handle(d), a, b))
    return a[], b[]
end

function mulaw_encode(x::Vector{Float32})
    out = zeros(UInt8, Base.length(x))
    check(ccall((:sparse_mulaw_encode, libsparse), Cint, (Ptr{Cfloat}, Csize_t, Ptr{UInt8}),
                x, Base.length(x), out))
    return out
end

function mulaw_decode(q::Vector{UInt8})
    out = zeros(Float32, Base.length(q))
    check(ccall((:sparse_mulaw_decode, libsparse), Cint, (Ptr{UInt8}, Csize_t, Ptr{Cfloat}),
                q, Base.length(q), out))
    return out
end

audio_supported() = ccall((:sparse_dataset_audio_supported, libsparse), Cint, ()) != 0

# A deep copy would own the same library handle or memory: both finalizers would free it (a
# double free). A Layout never changes and is shared; the others refuse.
Base.deepcopy_internal(x::Union{Context,Buffer,Model,Dataset}, ::IdDict) =
    throw(ArgumentError("a $(nameof(typeof(x))) owns a library handle and cannot be copied"))
Base.deepcopy_internal(l::Layout, ::IdDict) = l

function __init__()
    major = api_version() >> 16
    major == API_VERSION_MAJOR ||
        error("libsparse at $libsparse has API major version $major, Sparse.jl speaks " *
              "$API_VERSION_MAJOR")
end

end # module
