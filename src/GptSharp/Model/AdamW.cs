using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>
/// <c>torch.optim.AdamW</c>: Adam with decoupled weight decay, applied to every parameter it is given
/// (the book passes <c>model.parameters()</c>, so embeddings, biases and LayerNorm weights decay too).
/// One step for parameter p with gradient g at step t:
/// p *= 1 - lr·wd; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= lr·(m / (1-β1^t)) / (√(v / (1-β2^t)) + ε).
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly Parameter[] _parameters;

    public AdamW(IEnumerable<Parameter> parameters, float lr = 4e-4f, float weightDecay = 0.1f,
        float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f)
    {
        _parameters = parameters.ToArray();
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
        foreach (var p in _parameters) p.Grad.Zero();
    }

    /// <summary>Updates every parameter from its gradient.</summary>
    public unsafe void Step()
    {
        StepCount++;
        // PyTorch computes the bias corrections in double from the step count, then mixes float32 tensors.
        double biasCorrection1 = 1 - Math.Pow(Beta1, StepCount);
        double biasCorrection2 = 1 - Math.Pow(Beta2, StepCount);
        float stepSize = (float)(LearningRate / biasCorrection1);
        float biasCorrection2Sqrt = (float)Math.Sqrt(biasCorrection2);
        // Scalars are formed in double and rounded once, as PyTorch's Python-side arithmetic does.
        float decay = (float)(1.0 - (double)LearningRate * WeightDecay);
        float b1 = Beta1, b2 = Beta2, eps = Eps;
        float oneMinusB1 = (float)(1.0 - (double)Beta1), oneMinusB2 = (float)(1.0 - (double)Beta2);
        for (int i = 0; i < _parameters.Length; i++)
        {
            float* p = _parameters[i].Value.Data, g = _parameters[i].Grad.Data;
            float* m = ExpAvg[i].Data, v = ExpAvgSq[i].Data;
            long n = _parameters[i].Length;
            for (long j = 0; j < n; j++)
            {
                float pj = p[j] * decay;
                float gj = g[j];
                // torch 1.13 _single_tensor_adamw: exp_avg.mul_(β1).add_(g, alpha=1-β1); exp_avg_sq.mul_(β2).addcmul_(g, g, value=1-β2)
                float mj = m[j] = m[j] * b1 + oneMinusB1 * gj;
                float vj = v[j] = v[j] * b2 + oneMinusB2 * gj * gj;
                float denom = MathF.Sqrt(vj) / biasCorrection2Sqrt + eps;
                p[j] = pj - stepSize * mj / denom;
            }
        }
    }

    public void Dispose()
    {
        foreach (var t in ExpAvg) t.Dispose();
        foreach (var t in ExpAvgSq) t.Dispose();
    }
}
