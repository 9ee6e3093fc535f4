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
        // One arena for the parameters (the model's own when given all of its parameters in order), and the two
        // moments in its layout: every step is one loop over [0, N), every per-parameter tensor a view.
        _arena = ParameterArena.Pack(_parameters);
        _expAvg = new Tensor((int)Math.Max(1, _arena.Length));
        _expAvgSq = new Tensor((int)Math.Max(1, _arena.Length));
        ExpAvg = _parameters.Select(p => Tensor.View(_expAvg.Data + p.Offset, p.Value.ShapeArray)).ToArray();
        ExpAvgSq = _parameters.Select(p => Tensor.View(_expAvgSq.Data + p.Offset, p.Value.ShapeArray)).ToArray();
    }

    private readonly Tensor _expAvg, _expAvgSq;

    /// <summary>The weights and gradients of <see cref="Parameters"/>, back to back in their order.</summary>
    internal ParameterArena Arena => _arena.IsWhole ? _arena
        : throw new InvalidOperationException("Some of this optimizer's parameters were disposed, quantized or handed to another optimizer: it cannot step them any more.");

    private readonly ParameterArena _arena;

    /// <summary><see cref="ExpAvg"/> of every parameter, in the layout of <see cref="Arena"/>.</summary>
    internal Span<float> ExpAvgArena => new(_expAvg.Data, (int)_arena.Length);

    /// <summary><see cref="ExpAvgSq"/> of every parameter, in the layout of <see cref="Arena"/>.</summary>
    internal Span<float> ExpAvgSqArena => new(_expAvgSq.Data, (int)_arena.Length);

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

    /// <summary>Sets every gradient to zero (the book's <c>optimizer.zero_grad()</c>): one clear of the gradient arena.</summary>
    public void ZeroGrad() => RowParallel.For(ChunkCount(Arena.Length), ChunkSize, new ZeroKernel { Data = Arena.Grads.Data, Length = Arena.Length });

    /// <summary>Updates every parameter from its gradient, in one fused pass over memory, split across <see cref="Workers"/>.</summary>
    public void Step()
    {
        StepCount++;
        StepRange(0, Arena.Length, Arena.Grads.Data, 1f);
    }

    /// <summary>
    /// [distributed] Counts a step whose updates come as <see cref="StepRange"/> calls, one per part of the
    /// arena this rank owns (data-parallel sharding of the optimizer: each rank updates its range).
    /// </summary>
    internal void BeginShardedStep() => StepCount++;

    /// <summary>
    /// The step on elements [<paramref name="offset"/>, +<paramref name="length"/>) of the <see cref="Arena"/>, from the
    /// gradient at <paramref name="grad"/> times <paramref name="gradScale"/> ([distributed] the average over micro-batches:
    /// one float multiply, the very rounding of scaling the gradient first). Elementwise, so the updated elements get the
    /// bits <see cref="Step"/> gives them.
    /// </summary>
    internal void StepRange(long offset, long length, float* grad, float gradScale)
    {
        if (offset < 0 || length < 0 || offset + length > Arena.Length) throw new ArgumentOutOfRangeException(nameof(length));
        var kernel = new AdamWKernel
        {
            Param = Arena.Weights.Data + offset, Grad = grad, ExpAvg = _expAvg.Data + offset, ExpAvgSq = _expAvgSq.Data + offset,
            Length = length, Update = CurrentUpdate(gradScale),
        };
        RowParallel.For(ChunkCount(length), ChunkSize * 4L, kernel);
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

    // The update is memory-bound (7 float streams per element), so the range is cut into fixed-size chunks that all
    // threads share: one big embedding does not leave a core idle.
    internal const int ChunkSize = 1 << 14;

    private static int ChunkCount(long length) => checked((int)((length + ChunkSize - 1) / ChunkSize));

    private struct ZeroKernel : IRangeKernel
    {
        public float* Data;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            long from = (long)start * ChunkSize, to = Math.Min((long)end * ChunkSize, Length);
            NativeMemory.Clear(Data + from, (nuint)(to - from) * sizeof(float));
        }
    }

    /// <summary>Chunks [start, end) of one contiguous range.</summary>
    private struct AdamWKernel : IRangeKernel
    {
        public float* Param, Grad, ExpAvg, ExpAvgSq;
        public long Length;
        public AdamWUpdate Update;

        public readonly void Execute(int start, int end)
        {
            for (int c = start; c < end; c++)
            {
                long offset = (long)c * ChunkSize;
                Update.Apply(Param + offset, Grad + offset, ExpAvg + offset, ExpAvgSq + offset, (int)Math.Min(ChunkSize, Length - offset));
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

    public void Dispose()
    {
        foreach (var t in ExpAvg) t.Dispose();
        foreach (var t in ExpAvgSq) t.Dispose();
        _expAvg.Dispose();
        _expAvgSq.Dispose();
    }
}
