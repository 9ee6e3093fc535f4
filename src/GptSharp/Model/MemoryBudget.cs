using GptSharp.Layers;

namespace GptSharp.Model;

/// <summary>
/// Plausibility checks of model and run settings against the memory this process may use, made before anything
/// is allocated, so that a huge setting (or a size claimed by a file) fails with one line saying how much memory
/// it needs and how much the machine has, instead of an <see cref="OutOfMemoryException"/> or a swapping machine.
/// </summary>
internal static class MemoryBudget
{
    /// <summary>What the GC reports as usable: physical memory, or the container's limit.</summary>
    public static long AvailableBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Bytes of a model's weights (float32).</summary>
    public static double ModelBytes(GptConfig config) => 4.0 * ParameterCountEstimate(config);

    /// <summary>
    /// Bytes of a training step: weights, gradients and AdamW's two moments (4 copies of the parameters); per block the
    /// activations kept for the backward pass (14 values per token and width with the dropout masks, each attention
    /// row's softmax max and 1/sum, and the attention dropout mask as bits, heads × context² / 8 bytes per sequence);
    /// the scratch shared by the blocks (19 values per token and width, plus the attention backward's per-head copies:
    /// keys and values transposed, queries, dContext and keys head-major, and one dQuery buffer per group of key tiles);
    /// and the output head's loss pass (512 rows of
    /// logits at a time, plus one more head-sized gradient when a batch has more rows than that).
    /// bench <c>train-step-quick</c> prints it beside the measured peak RSS; <c>MemoryBudgetTests</c> check it against the buffers.
    /// </summary>
    public static double TrainingBytes(GptConfig config, int batchSize)
    {
        double tokens = (double)batchSize * config.ContextLength, e = config.EmbeddingDim, v = config.VocabSize;
        double perBlock = tokens * (14.0 * e + 4 + 2.0 * config.Heads)
                          + (double)batchSize * config.Heads * config.ContextLength * Math.Ceiling(config.ContextLength / 32.0);
        int dQueryGroups = Kernels.AttentionBackwardPlan.GroupsFor(batchSize * config.Heads, config.ContextLength);
        double shared = tokens * ((24.0 + dQueryGroups) * e + 2 + config.Heads);
        double head = Math.Min(tokens, HeadChunkRows) * v + (tokens > HeadChunkRows ? v * e : 0) + tokens;
        return 4.0 * (4.0 * ParameterCountEstimate(config) + config.Layers * perBlock + shared + head);
    }

    /// <summary>Rows of the output head's loss pass computed at a time (<c>GptModel.HeadChunkRows</c>' default).</summary>
    internal const int HeadChunkRows = 512;

    /// <summary>Throws <see cref="ArgumentException"/> when <paramref name="bytes"/> exceed the available memory.</summary>
    /// <param name="what">What needs the memory, e.g. "a model with emb_dim 100000": the message starts with it.</param>
    public static void Require(double bytes, string what)
    {
        long available = AvailableBytes;
        if (bytes > available)
            throw new ArgumentException($"{what} needs about {Format(bytes)} of memory; this machine has {Format(available)} available.");
    }

    /// <summary>Bytes as "1.5 GB" (decimal units, as memory is usually quoted).</summary>
    public static string Format(double bytes) => bytes switch
    {
        >= 1e12 => $"{bytes / 1e12:0.#} TB",
        >= 1e9 => $"{bytes / 1e9:0.#} GB",
        >= 1e6 => $"{bytes / 1e6:0.#} MB",
        _ => $"{bytes / 1e3:0.#} kB",
    };

    // In double: the settings may be absurd, and the estimate must not overflow on the way to saying so.
    internal static double ParameterCountEstimate(GptConfig c)
    {
        double e = c.EmbeddingDim, h = 4.0 * c.EmbeddingDim;
        double perBlock = 3 * (e * e + (c.QkvBias ? e : 0)) + (e * e + e) + (e * h + h) + (h * e + e) + 4 * e;
        return 2.0 * c.VocabSize * e + (double)c.ContextLength * e + c.Layers * perBlock + 2 * e;
    }
}
