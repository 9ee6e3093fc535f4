using System.Runtime.InteropServices;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Generation;

/// <summary>
/// The book's decoding functions (sections 4.7 and 5.3), with their exact semantics: every step crops the
/// sequence to the last <c>contextSize</c> tokens, runs the whole window through the model and reads the
/// last position's logits. <see cref="TextGenerator"/> is the faster, richer loop (KV cache, more processors).
/// </summary>
public static class BookGeneration
{
    /// <summary>
    /// The book's <c>generate_text_simple</c>: greedy decoding, <paramref name="maxNewTokens"/> times
    /// appending the argmax of the last position's logits. Returns prompt + new tokens.
    /// </summary>
    public static TokenBatch GenerateTextSimple(GptModel model, TokenBatch idx, int maxNewTokens, int contextSize) =>
        Generate(model, idx, maxNewTokens, contextSize);

    /// <summary>
    /// The book's <c>generate</c>: for each new token, crop to the last <paramref name="contextSize"/> tokens,
    /// take the last position's logits, keep only those ≥ the k-th largest when <paramref name="topK"/> is set,
    /// then sample from softmax(logits / <paramref name="temperature"/>) with <paramref name="generator"/>'s
    /// <c>multinomial</c> when the temperature is positive, or take the argmax when it is 0; stop at
    /// <paramref name="eosId"/>.
    /// </summary>
    /// <remarks>
    /// The book stops the whole batch when the new token equals <c>eos_id</c> (written for one row). Here each row
    /// stops on its own: a finished row is padded with <paramref name="eosId"/> while the others go on, and the step
    /// at which the last row finishes is not appended, so a batch of one behaves exactly as in the book.
    /// The model runs in eval mode with no activations kept (the book's <c>model.eval()</c> and <c>torch.no_grad()</c>);
    /// a model that was in training mode is switched back when the function returns.
    /// </remarks>
    public static TokenBatch Generate(GptModel model, TokenBatch idx, int maxNewTokens, int contextSize,
        float temperature = 0f, int? topK = null, int? eosId = null, IRandomGenerator? generator = null)
    {
        if (contextSize < 1) throw new ArgumentException($"context_size must be at least 1, got {contextSize}.");
        if (maxNewTokens < 0) throw new ArgumentException($"max_new_tokens must be ≥ 0, got {maxNewTokens}.");
        if (temperature < 0 || float.IsNaN(temperature)) throw new ArgumentException($"temperature must be ≥ 0, got {temperature}.");
        if (topK is < 1) throw new ArgumentException($"top_k must be at least 1, got {topK}.");
        if (temperature > 0 && generator is null) throw new ArgumentException("sampling with a temperature > 0 needs a random generator.");

        int batchSize = idx.BatchSize, vocab = model.Config.VocabSize;
        var rows = new List<int>[batchSize];
        for (int b = 0; b < batchSize; b++) rows[b] = [.. idx.Row(b)];
        var finished = new bool[batchSize];
        var next = new int[batchSize];
        var logits = new float[vocab];
        // The book's steps on the last position's logits: top-k, then softmax(logits / temperature) and multinomial, or argmax.
        var sampler = new TokenSampler(new GenerationOptions { Temperature = temperature, TopK = topK }, generator);

        // The book calls model.eval() before generating; the mode the caller had comes back afterwards.
        using (model.EvalNoGrad())
        {
            for (int step = 0; step < maxNewTokens; step++)
            {
                // idx_cond = idx[:, -context_size:]
                int length = rows[0].Count, window = Math.Min(length, contextSize);
                var windowIds = new int[batchSize * window];
                for (int b = 0; b < batchSize; b++)
                    rows[b].CopyTo(length - window, windowIds, b * window, window);

                Tensor output = model.Forward(new TokenBatch(windowIds, batchSize, window));

                bool allFinished = true;
                for (int b = 0; b < batchSize; b++)
                {
                    if (finished[b]) { next[b] = eosId!.Value; continue; }
                    // logits = logits[:, -1, :]
                    var last = output.Span.Slice((b * window + window - 1) * vocab, vocab);
                    next[b] = sampler.Pick(CollectionsMarshal.AsSpan(rows[b]), idx.SequenceLength, last, logits);
                    if (next[b] == eosId) finished[b] = true;
                    else allFinished = false;
                }
                if (eosId is not null && allFinished) break;
                for (int b = 0; b < batchSize; b++) rows[b].Add(next[b]);
            }
        }

        int total = rows[0].Count;
        var ids = new int[batchSize * total];
        for (int b = 0; b < batchSize; b++) rows[b].CopyTo(ids, b * total);
        return new TokenBatch(ids, batchSize, total);
    }
}
