using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>
/// <c>torch.optim.AdamW</c>: Adam with decoupled weight decay, applied to every parameter it is given
/// (the book passes <c>model.parameters()</c>, so embeddings, biases and LayerNorm weights decay too).
/// One step for parameter p with gradient g at step t:
/// p *= 1 - lr·wd; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= lr·(m / (1-β1^t)) / (√(v / (1-β2^t)) + ε).
/// </summary>
public sealed unsafe class AdamW : IDisposable
{
    private readonly Parameter[] _parameters;

    public AdamW(IEnumerable<Parameter> parameters, float lr = 4e-4f, float weightDecay = 0.1f,
        float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f)
    {
        _parameters = parameters.ToArray();
        if (_parameters.Any(p => p.Int8 != null)) throw new InvalidOperationException(GptModel.QuantizedTrainingMessage);
        if (!(lr >= 0)) throw new ArgumentException($"learning rate must be non-negative, got {lr}.");
        if (!(weightDecay >= 0)) throw new ArgumentException($"weight decay must be non-negative, got {weightDecay}.");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentException($"beta1 must be in [0, 1), got {beta1}.");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentException($"beta2 must be in [0, 1), got {beta2}.");
        LearningRate = lr;
        WeightDecay = weightDecay;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        ExpAvg = _parameters.Select(p => new Tensor(p.Value.ShapeArray)).ToArray();
        ExpAvgSq = _parameters.Select(p => new Tensor(p.Value.ShapeArray)).ToArray();
    }

    /// <summary>Current learning rate; a schedule sets it before each step.</summary>
    public float LearningRate { get; set; }

    public float WeightDecay { get; }
    public float Beta1 { get; }
    public float Beta2 { get; }
    public float Eps { get; }

    /// <summary>Number of steps taken (PyTorch's per-parameter <c>state["step"]</c>; the same for all here).</summary>
    public long StepCount { get; set; }

    /// <summary>The parameters, in the order given (PyTorch's param-group order).</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    /// <summary>First moments, one per parameter (<c>exp_avg</c>).</summary>
    public Tensor[] ExpAvg { get; }

    /// <summary>Second moments, one per parameter (<c>exp_avg_sq</c>).</summary>
    public Tensor[] ExpAvgSq { get; }

    /// <summary>Sets every gradient to zero (the book's <c>optimizer.zero_grad()</c>).</summary>
    public void ZeroGrad()
    {
        var chunks = FillChunks();
        RowParallel.For(_chunkCount, ChunkSize, new ZeroGradKernel { Chunks = chunks });
    }

    /// <summary>Updates every parameter from its gradient, in one fused pass over memory, split across <see cref="Workers"/>.</summary>
    public unsafe void Step()
    {
        StepCount++;
        var chunks = FillChunks();
        RowParallel.For(_chunkCount, ChunkSize * 4L, new AdamWKernel { Chunks = chunks, Update = CurrentUpdate(1f) });
    }

    /// <summary>
    /// [distributed] Counts a step whose updates come as <see cref="StepRange"/> calls, one per part of the
    /// parameters this rank owns (data-parallel sharding of the optimizer: each rank updates its share of every tensor).
    /// </summary>
    internal void BeginShardedStep() => StepCount++;

    /// <summary>
    /// [distributed] The step of <see cref="BeginShardedStep"/> on elements [<paramref name="offset"/>, +<paramref name="length"/>)
    /// of parameter <paramref name="parameter"/>, from the gradient at <paramref name="grad"/> times <paramref name="gradScale"/>
    /// (the average over micro-batches: one float multiply, the very rounding of scaling the gradient first). Elementwise,
    /// so the updated elements get the bits <see cref="Step"/> gives them.
    /// </summary>
    internal unsafe void StepRange(int parameter, long offset, int length, float* grad, float gradScale)
    {
        var kernel = new AdamWRangeKernel
        {
            Param = _parameters[parameter].Value.Data + offset, Grad = grad,
            ExpAvg = ExpAvg[parameter].Data + offset, ExpAvgSq = ExpAvgSq[parameter].Data + offset,
            Length = length, Update = CurrentUpdate(gradScale),
        };
        RowParallel.For((length + ChunkSize - 1) / ChunkSize, ChunkSize * 4L, kernel);
    }

    /// <summary>The scalars of the step <see cref="StepCount"/> at the current learning rate.</summary>
    private AdamWUpdate CurrentUpdate(float gradScale)
    {
        // PyTorch computes the bias corrections in double from the step count, then mixes float32 tensors.
        double biasCorrection1 = 1 - Math.Pow(Beta1, StepCount);
        double biasCorrection2 = 1 - Math.Pow(Beta2, StepCount);
        return new AdamWUpdate
        {
            StepSize = (float)(LearningRate / biasCorrection1),
            BiasCorrection2Sqrt = (float)Math.Sqrt(biasCorrection2),
            // Scalars are formed in double and rounded once, as PyTorch's Python-side arithmetic does.
            Decay = (float)(1.0 - (double)LearningRate * WeightDecay),
            Beta1 = Beta1,
            Beta2 = Beta2,
            OneMinusBeta1 = (float)(1.0 - (double)Beta1),
            OneMinusBeta2 = (float)(1.0 - (double)Beta2),
            Eps = Eps,
            GradScale = gradScale,
        };
    }

    // The update is memory-bound (7 float streams per element), so every parameter is cut into
    // fixed-size chunks that all threads share: one big embedding does not leave a core idle.
    internal const int ChunkSize = 1 << 14;
    private unsafe AdamWChunk* _chunks;
    private int _chunkCount;

    /// <summary>The chunk table, refilled from the current tensors on every call (cheap, and never stale).</summary>
    private unsafe AdamWChunk* FillChunks()
    {
        if (_chunks == null)
        {
            int count = 0;
            foreach (var p in _parameters) count += checked((int)((p.Length + ChunkSize - 1) / ChunkSize));
            _chunks = (AdamWChunk*)NativeMemory.Alloc((nuint)Math.Max(1, count), (nuint)sizeof(AdamWChunk));
            _chunkCount = count;
        }
        int next = 0;
        for (int i = 0; i < _parameters.Length; i++)
        {
            float* p = _parameters[i].Value.Data, g = _parameters[i].Grad.Data, m = ExpAvg[i].Data, v = ExpAvgSq[i].Data;
            for (long offset = 0; offset < _parameters[i].Length; offset += ChunkSize)
                _chunks[next++] = new AdamWChunk
                {
                    Param = p + offset, Grad = g + offset, ExpAvg = m + offset, ExpAvgSq = v + offset,
                    Length = (int)Math.Min(ChunkSize, _parameters[i].Length - offset),
                };
        }
        return _chunks;
    }

    private unsafe struct AdamWChunk
    {
        public float* Param, Grad, ExpAvg, ExpAvgSq;
        public int Length;
    }

    private unsafe struct ZeroGradKernel : IRangeKernel
    {
        public AdamWChunk* Chunks;

        public readonly void Execute(int start, int end)
        {
            for (int c = start; c < end; c++) new Span<float>(Chunks[c].Grad, Chunks[c].Length).Clear();
        }
    }

    private unsafe struct AdamWKernel : IRangeKernel
    {
        public AdamWChunk* Chunks;
        public AdamWUpdate Update;

        public readonly void Execute(int start, int end)
        {
            for (int c = start; c < end; c++)
                Update.Apply(Chunks[c].Param, Chunks[c].Grad, Chunks[c].ExpAvg, Chunks[c].ExpAvgSq, Chunks[c].Length);
        }
    }

    /// <summary>One contiguous range cut into <see cref="ChunkSize"/> chunks.</summary>
    private unsafe struct AdamWRangeKernel : IRangeKernel
    {
        public float* Param, Grad, ExpAvg, ExpAvgSq;
        public int Length;
        public AdamWUpdate Update;

        public readonly void Execute(int start, int end)
        {
            for (int c = start; c < end; c++)
            {
                int offset = c * ChunkSize;
                Update.Apply(Param + offset, Grad + offset, ExpAvg + offset, ExpAvgSq + offset, Math.Min(ChunkSize, Length - offset));
            }
        }
    }

    private struct AdamWUpdate
    {
        public float StepSize, BiasCorrection2Sqrt, Decay, Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Eps, GradScale;

        public readonly unsafe void Apply(float* p, float* g, float* m, float* v, int n)
        {
            int j = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                var decay = Vector512.Create(Decay);
                var b1 = Vector512.Create(Beta1);
                var b2 = Vector512.Create(Beta2);
                var c1 = Vector512.Create(OneMinusBeta1);
                var c2 = Vector512.Create(OneMinusBeta2);
                var bc2 = Vector512.Create(BiasCorrection2Sqrt);
                var eps = Vector512.Create(Eps);
                var stepSize = Vector512.Create(StepSize);
                var gradScale = Vector512.Create(GradScale);
                for (; j <= n - Vector512<float>.Count; j += Vector512<float>.Count)
                {
                    var gj = Vector512.Load(g + j) * gradScale;
                    var mj = Vector512.Load(m + j) * b1 + c1 * gj;
                    var vj = Vector512.Load(v + j) * b2 + c2 * gj * gj;
                    mj.Store(m + j);
                    vj.Store(v + j);
                    var denom = Vector512.Sqrt(vj) / bc2 + eps;
                    (Vector512.Load(p + j) * decay - stepSize * (mj / denom)).Store(p + j);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                var decay = Vector256.Create(Decay);
                var b1 = Vector256.Create(Beta1);
                var b2 = Vector256.Create(Beta2);
                var c1 = Vector256.Create(OneMinusBeta1);
                var c2 = Vector256.Create(OneMinusBeta2);
                var bc2 = Vector256.Create(BiasCorrection2Sqrt);
                var eps = Vector256.Create(Eps);
                var stepSize = Vector256.Create(StepSize);
                var gradScale = Vector256.Create(GradScale);
                for (; j <= n - Vector256<float>.Count; j += Vector256<float>.Count)
                {
                    var gj = Vector256.Load(g + j) * gradScale;
                    var mj = Vector256.Load(m + j) * b1 + c1 * gj;
                    var vj = Vector256.Load(v + j) * b2 + c2 * gj * gj;
                    mj.Store(m + j);
                    vj.Store(v + j);
                    var denom = Vector256.Sqrt(vj) / bc2 + eps;
                    (Vector256.Load(p + j) * decay - stepSize * (mj / denom)).Store(p + j);
                }
            }
            for (; j < n; j++)
            {
                // torch 1.13 _single_tensor_adamw: param.mul_(1 − lr·wd); exp_avg.mul_(β1).add_(g, alpha=1−β1);
                // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1−β2); param.addcdiv_(exp_avg, denom, value=−step_size)
                float gj = g[j] * GradScale;
                float mj = m[j] = m[j] * Beta1 + OneMinusBeta1 * gj;
                float vj = v[j] = v[j] * Beta2 + OneMinusBeta2 * gj * gj;
                float denom = MathF.Sqrt(vj) / BiasCorrection2Sqrt + Eps;
                p[j] = p[j] * Decay - StepSize * (mj / denom);
            }
        }
    }

    public unsafe void Dispose()
    {
        if (_chunks != null) NativeMemory.Free(_chunks);
        _chunks = null;
        foreach (var t in ExpAvg) t.Dispose();
        foreach (var t in ExpAvgSq) t.Dispose();
    }
}
