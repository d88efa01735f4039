# Tests of Sparse.jl against a naive Float64 reference (masks from the token-level definitions
# in capi/include/sparse/layout.h). Run where Julia is installed:
#   SPARSE_LIBRARY=build/libsparse.so julia capi/bindings/julia/test/runtests.jl
# (Julia is not installable on this project's CI machines; there check_bindings.py checks the
# module's ccalls and struct layouts against the headers and the library instead.)
using Test
using LinearAlgebra
using Random

include(joinpath(@__DIR__, "..", "Sparse.jl"))
using .Sparse
const S = Sparse

const GOLDEN = 0x9E3779B97F4A7C15
const C1 = 0xBF58476D1CE4E5B9
const C2 = 0x94D049BB133111EB

function bigbird_blocks(seed::UInt64, head, row, count, causal, nb)
    r = causal ? row + 1 : nb
    count >= r && return Set(0:r-1)
    x = seed ⊻ (GOLDEN * UInt64(head + 1)) ⊻ (C1 * UInt64(row + 1))
    taken = Set{Int}()
    while length(taken) < count
        x += GOLDEN
        z = x
        z = (z ⊻ (z >> 30)) * C1
        z = (z ⊻ (z >> 27)) * C2
        z ⊻= z >> 31
        push!(taken, Int(z % UInt64(r)))
    end
    return taken
end

"Does query i attend to key j (0-based) under pattern p on head h?"
function allowed(p::S.Pattern, h, i, j, n, block)
    l, c, w = p.stride, p.summary, p.window
    k = p.kind
    k == :dense && return !p.causal || j <= i
    k == :local && return i - w < j <= i
    k == :strided_row && return max(0, i - l) <= j <= i
    k == :strided_column && return j <= i && mod(i - j, l) == 0
    k == :fixed_block && return j <= i && div(j, l) == div(i, l)
    if k == :fixed_summary
        v = mod(h, p.summary_variants)
        return j <= i && l - c * (v + 1) <= mod(j, l) < l - c * v
    end
    a = p.causal ? (i - w < j <= i) : abs(i - j) < w
    if k != :sliding_window
        a |= (j in p.global_tokens) || (i in p.global_tokens)
    end
    if k == :bigbird
        nb = cld(n, block)
        a |= div(j, block) in bigbird_blocks(p.seed, h, div(i, block), p.random_blocks, p.causal, nb)
    end
    return a && (!p.causal || j <= i)
end

"masks[j+1, i+1, h+1]"
function masks(patterns, n, heads, block)
    m = falses(n, n, heads)
    for p in patterns, h in 0:heads-1
        (p.head == -1 || p.head == h) || continue
        for i in 0:n-1, j in 0:n-1
            m[j+1, i+1, h+1] |= allowed(p, h, i, j, n, block)
        end
    end
    return m
end

"Naive attention on (d, n, heads, batch) arrays: (out, lse, probabilities)."
function naive_forward(q, k, v, m, scale)
    d, n, H, B = size(q)
    out = zeros(Float64, d, n, H, B)
    lse = zeros(Float64, n, H, B)
    P = zeros(Float64, n, n, H, B)   # P[j, i, h, b]
    for b in 1:B, h in 1:H, i in 1:n
        keys = findall(m[:, i, h])
        if isempty(keys)
            lse[i, h, b] = -Inf
            continue
        end
        s = [scale * dot(Float64.(q[:, i, h, b]), Float64.(k[:, j, h, b])) for j in keys]
        mx = maximum(s)
        e = exp.(s .- mx)
        lse[i, h, b] = mx + log(sum(e))
        P[keys, i, h, b] = e ./ sum(e)
        out[:, i, h, b] = sum(P[j, i, h, b] .* Float64.(v[:, j, h, b]) for j in keys)
    end
    return out, lse, P
end

function naive_backward(q, k, v, dout, m, scale)
    out, _, P = naive_forward(q, k, v, m, scale)
    d, n, H, B = size(q)
    dq, dk, dv = (zeros(Float64, d, n, H, B) for _ in 1:3)
    for b in 1:B, h in 1:H, i in 1:n
        dp = [dot(Float64.(dout[:, i, h, b]), Float64.(v[:, j, h, b])) for j in 1:n]
        delta = dot(Float64.(dout[:, i, h, b]), out[:, i, h, b])
        for j in 1:n
            P[j, i, h, b] == 0 && continue
            ds = P[j, i, h, b] * (dp[j] - delta)
            dq[:, i, h, b] .+= scale * ds .* k[:, j, h, b]
            dk[:, j, h, b] .+= scale * ds .* q[:, i, h, b]
            dv[:, j, h, b] .+= P[j, i, h, b] .* dout[:, i, h, b]
        end
    end
    return dq, dk, dv
end

const CASES = [
    ("strided multi-head", (32, 200, 2, 2), 32, [S.strided_row(14; head=0), S.strided_column(14; head=1)], 0),
    ("fixed merged", (64, 128, 1, 1), 16, [S.fixed_block(16), S.fixed_summary(16, 4)], 0.3),
    ("empty head", (32, 64, 2, 1), 16, [S.local_window(9; head=0)], 0),
    ("bigbird", (32, 96, 2, 1), 32, [S.bigbird(8, [0, 50], 1, 3; causal=false)], 0),
]

@testset "Sparse.jl" begin
    ctx = S.Context(:cpu; num_threads=2)
    @test S.backend(ctx) == :cpu
    @test S.num_threads(ctx) == 2
    @test S.api_version() >> 16 == S.API_VERSION_MAJOR

    @testset "row masks: $(name)" for (name, dims, block, pats, _) in CASES
        n, H = dims[2], dims[3]
        layout = S.Layout(n, pats; heads=H, block_size=block)
        m = masks(pats, n, H, block)
        for h in 0:H-1, i in 0:n-1
            @test S.row_mask(layout, h, i) == m[:, i+1, h+1]
        end
        @test S.stats(layout).useful_elements == count(m)
        close(layout)
    end

    @testset "forward and backward: $(name)" for (name, dims, block, pats, scale) in CASES
        d, n, H, B = dims
        rng = MersenneTwister(1)
        q, k, v, dout = (randn(rng, Float32, dims...) for _ in 1:4)
        layout = S.Layout(n, pats; heads=H, block_size=block)
        s = scale == 0 ? 1 / sqrt(d) : scale
        m = masks(pats, n, H, block)
        out, lse = S.attention_forward(ctx, layout, q, k, v; scale=scale)
        e_out, e_lse, _ = naive_forward(q, k, v, m, s)
        @test isapprox(out, e_out; rtol=1e-4, atol=2e-5 * length(out))
        @test all(isinf.(lse) .== isinf.(e_lse))
        @test isapprox(lse[isfinite.(e_lse)], e_lse[isfinite.(e_lse)]; rtol=1e-5)
        if n <= 128
            dq, dk, dv = S.attention_backward(ctx, layout, q, k, v, out, lse, dout; scale=scale)
            e = naive_backward(q, k, v, dout, m, s)
            for (g, eg) in zip((dq, dk, dv), e)
                @test maximum(abs.(g .- eg)) <= 2e-4 * max(1, maximum(abs.(eg)))
            end
        end
    end

    @testset "empty rows" begin
        layout = S.Layout(64, [S.local_window(9; head=0)]; heads=2, block_size=16)
        q = randn(Float32, 32, 64, 2, 1)
        out, lse = S.attention_forward(ctx, layout, q, q, q)
        @test all(out[:, :, 2, :] .== 0)
        @test all(lse[:, 2, :] .== -Inf)
    end

    @testset "permuted (strided) arrays" begin
        d, n, H, B = 32, 96, 2, 1
        base = randn(Float32, d, H, n, B)           # stored (d, heads, n, batch)
        q = PermutedDimsArray(base, (1, 3, 2, 4))   # seen as (d, n, heads, batch)
        pats = [S.fixed_block(16)]
        layout = S.Layout(n, pats; heads=H, block_size=16)
        out, _ = S.attention_forward(ctx, layout, q, q, q)
        e_out, _, _ = naive_forward(collect(q), collect(q), collect(q), masks(pats, n, H, 16), 1 / sqrt(d))
        @test isapprox(out, e_out; rtol=1e-4, atol=1e-3)
    end

    @testset "context memory" begin
        q = randn(Float32, 16, 64, 1, 1)
        layout = S.Layout(64, [S.strided_row(8)]; block_size=16)
        bq, bo = S.Buffer(ctx, sizeof(q)), S.Buffer(ctx, sizeof(q))
        copyto!(bq, q)
        tq = Ref(S.tensor(bq, Float32, [1, 1, 64, 16]))
        to = Ref(S.tensor(bo, Float32, [1, 1, 64, 16]))
        S.check(ccall((:sparse_attention_forward, S.libsparse), Cint,
                      (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{S.AttentionParams}, Ref{S.SparseTensor},
                       Ref{S.SparseTensor}, Ref{S.SparseTensor}, Ref{S.SparseTensor},
                       Ptr{S.SparseTensor}),
                      S.handle(ctx), S.handle(layout), C_NULL, tq, tq, tq, to, C_NULL))
        out = copyto!(similar(q), bo)
        @test out ≈ S.attention_forward(ctx, layout, q, q, q)[1]
        close(bq); close(bo)
        # A Context closed before its buffer: the buffer's memory is still freed (it leaked), then
        # the context destroyed with it.
        c2 = S.Context(:cpu; num_threads=1)
        b2 = S.Buffer(c2, 1024)
        close(c2)
        @test_throws ArgumentError S.handle(c2)
        @test c2.closing != C_NULL && c2.open_buffers == 1
        close(b2); close(b2)
        @test c2.closing == C_NULL && c2.open_buffers == 0
        # A deep copy would be a second owner (a double free): refused; a Layout is shared.
        b3 = S.Buffer(ctx, 64)
        @test_throws ArgumentError deepcopy(b3)
        @test_throws ArgumentError deepcopy(ctx)
        @test deepcopy([layout])[1] === layout
        close(b3)
    end

    @testset "errors" begin
        layout = S.Layout(64, [S.strided_row(8)]; heads=2, block_size=16)
        e = try
            S.Layout(64, [S.fixed_summary(8, 9)]; block_size=16); nothing
        catch err
            err
        end
        @test e isa SparseError && e.status == S.ERR_INVALID_ARGUMENT && occursin("summary", e.message)
        @test_throws SparseError S.Layout(64, [S.dense()]; block_size=24)
        @test_throws SparseError S.Context(:tpu)
        if !S.backend_available(:cuda)
            e = try S.Context(:cuda); nothing catch err; err end
            @test e isa SparseError && e.status == S.ERR_UNSUPPORTED
        end
        q64 = randn(Float64, 8, 64, 2, 1)
        e = try S.attention_forward(ctx, layout, q64, q64, q64); nothing catch err; err end
        @test e isa SparseError && e.status == S.ERR_UNSUPPORTED
        q = randn(Float32, 8, 48, 2, 1)
        @test_throws ArgumentError S.attention_forward(ctx, layout, q, q, q)
        q = randn(Float32, 8, 64, 2, 1)
        e = try S.attention_forward(ctx, layout, q, q, q; scale=NaN); nothing catch err; err end
        @test e isa SparseError && occursin("scale", e.message)
        @test_throws SparseError S.row_mask(layout, 5, 0)
        close(layout); close(layout)
        @test_throws ArgumentError S.stats(layout)
    end

    @testset "struct sizes reported by the library" begin
        s = S.zeroed(S.Settings)
        S.check(ccall((:sparse_settings_default, S.libsparse), Cint, (Ref{S.Settings},), s))
        @test s[].struct_size == sizeof(S.Settings)
        d = S.zeroed(S.LayoutDesc)
        S.check(ccall((:sparse_layout_desc_default, S.libsparse), Cint, (Ref{S.LayoutDesc},), d))
        @test d[].struct_size == sizeof(S.LayoutDesc)
        @test d[].pattern_struct_size == sizeof(S.PatternC)
        @test S.params_ref(0)[].struct_size == sizeof(S.AttentionParams)
        t = S.tensor_contiguous(C_NULL, S.DTYPE_F64, Int64[2, 3, 4])
        @test t.ndim == 3 && t.shape[1:3] == (2, 3, 4) && t.strides[1:3] == (12, 4, 1)
    end
    @testset "model" begin
        cfg = S.model_config(; seq_len=32, num_layers=2, d_model=16, num_heads=2, stride=4,
                             block_size=16, position_shape=(8, 4, 0, 0))
        m = S.Model(ctx, cfg, S.train_config(; learning_rate=3e-3))
        @test S.parameter_count(m) == S.parameter_count(cfg)
        tokens = rand(MersenneTwister(2), UInt8, 32, 2)          # (seq_len, batch)
        before = S.evaluate(m, tokens)
        @test S.evaluate(m, tokens) == before
        @test isapprox(sum(S.token_bits(m, tokens)) / length(tokens), before; atol=1e-5)
        local st
        for _ in 1:15
            st = S.train_step!(m, tokens)
            @test st.bits_per_dim ≈ st.loss / log(2)
        end
        @test S.model_step(m) == 15 && st.step == 15
        @test S.evaluate(m, tokens) < before - 0.5
        @test occursin("step 15/30", S.progress_line(st, 30, 1.0))
        g = S.sample(m, 32; prompt=Vector{UInt8}("abc"), temperature=0)
        @test g == S.sample(m, 32; prompt=Vector{UInt8}("abc"), temperature=0) && g[1:3] == b"abc"
        path = tempname()
        S.save(m, path)
        next = [rand(MersenneTwister(k), UInt8, 32, 2) for k in 3:4]
        cont = [S.train_step!(m, b).loss for b in next]
        r = S.load_model(ctx, path)
        @test S.model_step(r) == 15
        @test [S.train_step!(r, b).loss for b in next] == cont
        @test_throws ArgumentError S.train_step!(m, tokens[1:40])
        @test_throws ArgumentError S.evaluate(m, permutedims(tokens))  # (batch, seq_len)
        @test S.evaluate(m, vec(tokens)) == S.evaluate(m, tokens)
        e = try S.load_model(ctx, path * ".missing"); nothing catch err; err end
        @test e isa SparseError && e.status == S.ERR_IO
        close(r); close(m); rm(path)
    end

    @testset "datasets" begin
        data = rand(MersenneTwister(3), UInt8, 10_000)
        path = tempname()
        write(path, data)
        d = S.Dataset(:text; path=path, seq_len=100, shuffle=0)
        @test (S.num_sequences(d), d.seq_len, S.vocab_size(d)) == (90, 100, 256)
        @test vec(S.read_sequences(d, 0, 90)) == data[1:9000]
        @test vec(S.read_sequences(d, 5, 2, Int32)) == Int32.(data[501:700])
        toks, idx = S.next_batch!(d, 3)
        @test idx == [0, 1, 2] && vec(toks) == data[1:300]
        @test S.dataset_position(d) == (0, 3)
        v = S.Dataset(:text; path=path, split=:valid, seq_len=100)
        @test vec(S.read_sequences(v, 0, 5)) == data[9001:9500]
        e = try S.read_sequences(d, 89, 2); nothing catch err; err end
        @test e isa SparseError && e.status == S.ERR_INVALID_ARGUMENT
        close(d); close(v); rm(path)
        syn = S.Dataset(:synthetic_text; seq_len=64, num_sequences=12, vocab=16, seed=5)
        toks, idx = S.next_batch!(syn, 12)
        @test sort(idx) == 0:11
        @test toks == S.read_sequences(syn, 0, 12)[:, idx .+ 1]
        h, nll = S.entropy(syn)
        @test 0 < h <= 4 && nll > 0
        x = collect(range(-1.2f0, 1.2f0; length=1001))
        c = clamp.(Float64.(x), -1, 1)
        f = sign.(c) .* log1p.(255 .* abs.(c)) ./ log(256)
        @test S.mulaw_encode(x) == UInt8.(round.((f .+ 1) ./ 2 .* 255))
    end
    close(ctx)
end
