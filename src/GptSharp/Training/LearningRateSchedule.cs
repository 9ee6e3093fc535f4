using GptSharp.Model;
using System.Numerics.Tensors;

namespace GptSharp.Training;

/// <summary>
/// Appendix D's learning-rate schedule: a linear warmup from <see cref="InitialLr"/> to <see cref="PeakLr"/>
/// over <see cref="WarmupSteps"/> steps, then (when <see cref="MinLr"/> is set) a half-cosine decay to
/// <see cref="MinLr"/> at <see cref="TotalSteps"/>. With neither, the rate is the constant <see cref="PeakLr"/>
/// (the book's chapter-5 run). A pure function of the step, so resuming needs only the step number.
/// </summary>
public sealed record LearningRateSchedule(double PeakLr, int WarmupSteps = 0, double InitialLr = 3e-5, double? MinLr = null, long TotalSteps = 0)
{
    /// <summary>True when the rate is <see cref="PeakLr"/> at every step.</summary>
    public bool IsConstant => WarmupSteps <= 0 && MinLr is null;

    /// <summary>The rate for optimizer step <paramref name="step"/> (0-based), as Appendix D's <c>train_model</c> computes it.</summary>
    public double At(long step)
    {
        if (step < WarmupSteps)
            return InitialLr + step * ((PeakLr - InitialLr) / WarmupSteps);
        if (MinLr is not double minLr)
            return PeakLr;
        long decaySteps = TotalSteps - WarmupSteps;
        double progress = decaySteps > 0 ? Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0.0, 1.0) : 1.0;
        return minLr + (PeakLr - minLr) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>Gradient operations between the backward pass and the optimizer step.</summary>
internal static class Gradients
{
    /// <summary>
    /// <c>torch.nn.utils.clip_grad_norm_(parameters, max_norm)</c>: when the global L2 norm of all gradients
    /// exceeds <paramref name="maxNorm"/>, scales them all by <c>maxNorm / (norm + 1e-6)</c>. Returns the norm before clipping.
    /// </summary>
    public static double ClipGradNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        if (!(maxNorm > 0)) throw new ArgumentException($"The gradient-clipping norm must be positive, got {maxNorm}.");
        double sumOfSquares = 0;
        foreach (var p in parameters)
        {
            // One float norm per tensor, then the norm of the norms, as PyTorch does.
            double norm = TensorPrimitives.Norm<float>(p.Grad.Span);
            sumOfSquares += norm * norm;
        }
        double totalNorm = Math.Sqrt(sumOfSquares);
        double clipCoefficient = maxNorm / (totalNorm + 1e-6);
        if (clipCoefficient < 1.0) Scale(parameters, (float)clipCoefficient);
        return totalNorm;
    }

    /// <summary>Multiplies every gradient by <paramref name="factor"/> (averaging accumulated micro-batch gradients).</summary>
    public static void Scale(IReadOnlyList<Parameter> parameters, float factor)
    {
        foreach (var p in parameters)
            TensorPrimitives.Multiply(p.Grad.Span, factor, p.Grad.Span);
    }
}
