using System.Runtime.CompilerServices;
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
    public void ZeroGrad() => Simd.ParallelMap(Path, Arena.Length, 1, new ZeroOp { Data = Arena.Grads.Data });

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
        var update = CurrentUpdate(gradScale);
        update.P = Arena.Weights.Data + offset;
        update.G = grad;
        update.M = _expAvg.Data + offset;
        update.V = _expAvgSq.Data + offset;
        // Memory-bound (7 float streams per element): the range is cut into chunks that all threads share.
        Simd.ParallelMap(Path, length, 4, update);
    }

    /// <summary>The vector width of the step (tests run each).</summary>
    internal Gemm.KernelPath Path { get; set; } = Gemm.BestPath;

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

    private struct ZeroOp : IMapOp
    {
        public float* Data;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long i) => Data[i] = 0f;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke256(long i) => Vector256<float>.Zero.Store(Data + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke512(long i) => Vector512<float>.Zero.Store(Data + i);
    }

    /// <summary>The step's scalars, and the update of one element or vector of them (<see cref="Simd.Map{TOp}"/> runs it).</summary>
    private struct AdamWUpdate : IMapOp
    {
        public float StepSize, BiasCorrection2Sqrt, Decay, Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Eps, GradScale;
        public float* P, G, M, V;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long j)
        {
            // torch 1.13 _single_tensor_adamw: param.mul_(1 − lr·wd); exp_avg.mul_(β1).add_(g, alpha=1−β1);
            // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1−β2); param.addcdiv_(exp_avg, denom, value=−step_size)
            float gj = G[j] * GradScale;
            float mj = M[j] = M[j] * Beta1 + OneMinusBeta1 * gj;
            float vj = V[j] = V[j] * Beta2 + OneMinusBeta2 * gj * gj;
            float denom = MathF.Sqrt(vj) / BiasCorrection2Sqrt + Eps;
            P[j] = P[j] * Decay - StepSize * (mj / denom);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke256(long j)
        {
            var gj = Vector256.Load(G + j) * Vector256.Create(GradScale);
            var mj = Vector256.Load(M + j) * Vector256.Create(Beta1) + Vector256.Create(OneMinusBeta1) * gj;
            var vj = Vector256.Load(V + j) * Vector256.Create(Beta2) + Vector256.Create(OneMinusBeta2) * gj * gj;
            mj.Store(M + j);
            vj.Store(V + j);
            var denom = Vector256.Sqrt(vj) / Vector256.Create(BiasCorrection2Sqrt) + Vector256.Create(Eps);
            (Vector256.Load(P + j) * Vector256.Create(Decay) - Vector256.Create(StepSize) * (mj / denom)).Store(P + j);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke512(long j)
        {
            var gj = Vector512.Load(G + j) * Vector512.Create(GradScale);
            var mj = Vector512.Load(M + j) * Vector512.Create(Beta1) + Vector512.Create(OneMinusBeta1) * gj;
            var vj = Vector512.Load(V + j) * Vector512.Create(Beta2) + Vector512.Create(OneMinusBeta2) * gj * gj;
            mj.Store(M + j);
            vj.Store(V + j);
            var denom = Vector512.Sqrt(vj) / Vector512.Create(BiasCorrection2Sqrt) + Vector512.Create(Eps);
            (Vector512.Load(P + j) * Vector512.Create(Decay) - Vector512.Create(StepSize) * (mj / denom)).Store(P + j);
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
