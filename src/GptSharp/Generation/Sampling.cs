using System.Numerics.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// The decoding primitives of the book's section 5.3 on one row of next-token logits:
/// <c>torch.argmax</c>, the top-k mask, temperature scaling and <c>torch.softmax</c>.
/// Every routine works in place on spans and allocates nothing.
/// </summary>
public static class Sampling
{
    /// <summary>Index of the largest logit; the first one on ties, like <c>torch.argmax</c> on the CPU.</summary>
    public static int Argmax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("argmax needs at least one logit.");
        int best = 0;
        float bestValue = logits[0];
        for (int i = 1; i < logits.Length; i++)
        {
            // NaN counts as the largest value, as in PyTorch.
            if (logits[i] > bestValue || (float.IsNaN(logits[i]) && !float.IsNaN(bestValue)))
            {
                bestValue = logits[i];
                best = i;
            }
        }
        return best;
    }

    /// <summary>
    /// The k-th largest logit (<c>torch.topk(logits, k)[0][-1]</c>), found with a min-heap of k values
    /// kept in <paramref name="heap"/> (length ≥ k), so the vocabulary is read once and nothing is sorted.
    /// </summary>
    public static float KthLargest(ReadOnlySpan<float> logits, int k, Span<float> heap)
    {
        if (k < 1 || k > logits.Length)
            throw new ArgumentException($"top-k must be between 1 and the vocabulary size ({logits.Length}), got {k}.");
        heap = heap[..k];
        for (int i = 0; i < k; i++) heap[i] = logits[i];
        for (int i = k / 2 - 1; i >= 0; i--) SiftDown(heap, i);
        for (int i = k; i < logits.Length; i++)
        {
            if (logits[i] > heap[0])
            {
                heap[0] = logits[i];
                SiftDown(heap, 0);
            }
        }
        return heap[0];
    }

    private static void SiftDown(Span<float> heap, int i)
    {
        int n = heap.Length;
        float value = heap[i];
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && heap[child + 1] < heap[child]) child++;
            if (!(heap[child] < value)) break;
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = value;
    }

    /// <summary>
    /// The book's top-k filter: every logit below the k-th largest becomes −∞
    /// (<c>torch.where(logits &lt; min_val, -inf, logits)</c>), so ties with the k-th value survive.
    /// A k at least the vocabulary size keeps everything.
    /// </summary>
    public static void TopK(Span<float> logits, int k, Span<float> heap)
    {
        if (k < 1) throw new ArgumentException($"top-k must be at least 1, got {k}.");
        if (k >= logits.Length) return;
        float minValue = KthLargest(logits, k, heap);
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] < minValue) logits[i] = float.NegativeInfinity;
    }

    /// <summary>Allocating convenience for <see cref="TopK(Span{float}, int, Span{float})"/>.</summary>
    public static void TopK(Span<float> logits, int k) => TopK(logits, k, new float[Math.Min(k, logits.Length)]);

    /// <summary>
    /// The book's temperature scaling: <c>logits / temperature</c> (float32 division, as PyTorch does it).
    /// A temperature so small that the largest logit / T overflows float32 (about 1e-38 and below) would turn the
    /// softmax into ∞ − ∞ = NaN; there the logits are scaled as (logit − max) / T instead, which is the same
    /// distribution in exact arithmetic and in float32 is its T → 0 limit: all the mass on the largest logit (shared
    /// equally by exact ties), every other token 0. Sampling at such a temperature is greedy decoding.
    /// </summary>
    public static void ApplyTemperature(Span<float> logits, float temperature)
    {
        if (!(temperature > 0)) throw new ArgumentException($"temperature must be positive to scale logits, got {temperature}.");
        if (logits.IsEmpty) return;
        float max = TensorPrimitives.Max(logits);
        if (float.IsFinite(max) && !float.IsFinite(max / temperature))
        {
            for (int i = 0; i < logits.Length; i++) logits[i] = (logits[i] - max) / temperature;
            return;
        }
        for (int i = 0; i < logits.Length; i++) logits[i] /= temperature;
    }

    /// <summary>
    /// <c>torch.softmax(logits, dim=-1)</c>: subtract the maximum, exponentiate, multiply by 1/sum.
    /// −∞ logits get probability 0. <paramref name="probabilities"/> may be <paramref name="logits"/> itself.
    /// </summary>
    public static void Softmax(ReadOnlySpan<float> logits, Span<float> probabilities)
    {
        if (probabilities.Length < logits.Length) throw new ArgumentException("The probability buffer is shorter than the logits.");
        probabilities = probabilities[..logits.Length];
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, probabilities);
        TensorPrimitives.Exp(probabilities, probabilities);
        float sum = TensorPrimitives.Sum(probabilities);
        TensorPrimitives.Multiply(probabilities, 1f / sum, probabilities);
    }

    /// <summary>
    /// <c>torch.log_softmax</c>: logits − max − log(Σ exp(logits − max)), for beam scores.
    /// </summary>
    public static void LogSoftmax(ReadOnlySpan<float> logits, Span<float> logProbabilities)
    {
        logProbabilities = logProbabilities[..logits.Length];
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, logProbabilities);
        double sum = 0;
        foreach (float v in logProbabilities) sum += Math.Exp(v);
        TensorPrimitives.Subtract(logProbabilities, (float)Math.Log(sum), logProbabilities);
    }
}
