using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Data;

namespace GptSharp.Evaluation;

/// <summary>
/// One scoring request of a benchmark: how likely the model finds <see cref="Continuation"/> right after
/// <see cref="Context"/> (lm-evaluation-harness's <c>loglikelihood</c> request; llm.c's HellaSwag row).
/// </summary>
internal readonly record struct ContinuationRequest(int[] Context, int[] Continuation);

/// <summary>
/// The model's verdict on one <see cref="ContinuationRequest"/>: the summed cross-entropy of the continuation's tokens
/// (−log p(continuation | context), in nats), their count, and whether greedy decoding (argmax at every position)
/// reproduces every one of them.
/// </summary>
internal readonly record struct ContinuationScore(double Loss, int Tokens, bool IsGreedy)
{
    /// <summary>The mean loss per continuation token (llm.c's <c>avg_loss</c>, what <c>acc_norm</c> compares).</summary>
    public double MeanLoss => Loss / Tokens;
}

/// <summary>
/// Scores continuation requests in batches: each row is context + continuation, padded on the right to the longest
/// row of its batch (the causal mask keeps padding out of every real position), run once through the model in
/// inference mode on all cores; the continuation's token losses come from the positions that predict them.
/// A row longer than the model's context keeps its last tokens (the context is cut from the left, as
/// lm-evaluation-harness does); the continuation itself must fit.
/// </summary>
internal static class ContinuationScorer
{
    private const int IgnoreIndex = -100;

    /// <param name="batchSize">Rows per forward pass.</param>
    /// <param name="greedy">Also decide <see cref="ContinuationScore.IsGreedy"/> (an argmax over the vocabulary per continuation token).</param>
    /// <param name="progress">Called after each batch with the number of requests scored so far.</param>
    /// <param name="describe">Names request i in an error message (its file and line).</param>
    public static unsafe ContinuationScore[] Score(GptModel model, IReadOnlyList<ContinuationRequest> requests, int batchSize, bool greedy,
        Action<int>? progress, Func<int, string> describe)
    {
        if (batchSize < 1) throw new ArgumentException($"The batch size must be at least 1, got {batchSize}.");
        int contextLength = model.Config.ContextLength, vocab = model.Config.VocabSize;
        for (int i = 0; i < requests.Count; i++) Check(requests[i], contextLength, vocab, () => describe(i));

        var scores = new ContinuationScore[requests.Count];
        bool wasTraining = model.IsTraining;
        model.Eval();
        try
        {
            using var noGrad = model.NoGrad();
            for (int start = 0; start < requests.Count; start += batchSize)
            {
                int rows = Math.Min(batchSize, requests.Count - start);
                int seq = 0;
                for (int r = 0; r < rows; r++) seq = Math.Max(seq, WindowLength(requests[start + r], contextLength));
                var ids = new int[rows * seq];
                var targets = new int[rows * seq];
                Array.Fill(targets, IgnoreIndex);
                for (int r = 0; r < rows; r++) FillRow(requests[start + r], contextLength, ids.AsSpan(r * seq, seq), targets.AsSpan(r * seq, seq));

                Tensor logits = model.Forward(new TokenBatch(ids, rows, seq));
                var tokenLosses = new float[rows * seq];
                fixed (float* losses = tokenLosses)
                fixed (int* t = targets)
                    Kernels.SoftmaxCrossEntropyForward(null, losses, logits.Data, t, rows * seq, vocab, IgnoreIndex);

                for (int r = 0; r < rows; r++)
                {
                    int n = requests[start + r].Continuation.Length;
                    int first = r * seq + WindowLength(requests[start + r], contextLength) - n;
                    // float32 losses summed in double: the sum of a continuation's few tokens is exact to float precision either way.
                    double sum = 0;
                    bool isGreedy = true;
                    for (int k = first; k < first + n; k++)
                    {
                        sum += tokenLosses[k];
                        if (greedy && isGreedy)
                            isGreedy = Sampling.Argmax(new ReadOnlySpan<float>(logits.Data + (long)k * vocab, vocab)) == targets[k];
                    }
                    scores[start + r] = new ContinuationScore(sum, n, greedy && isGreedy);
                }
                progress?.Invoke(start + rows);
            }
        }
        finally
        {
            if (wasTraining) model.Train();
        }
        return scores;
    }

    private static void Check(ContinuationRequest request, int contextLength, int vocab, Func<string> where)
    {
        if (request.Context.Length == 0)
            throw new InvalidDataException($"{where()}: the context is empty (nothing to predict the first token from).");
        if (request.Continuation.Length == 0)
            throw new InvalidDataException($"{where()}: the continuation is empty.");
        if (request.Continuation.Length > contextLength)
            throw new InvalidDataException($"{where()}: the continuation has {request.Continuation.Length} tokens, more than the model's context length {contextLength}.");
        foreach (int[] part in new[] { request.Context, request.Continuation })
            foreach (int id in part)
                if ((uint)id >= (uint)vocab)
                    throw new InvalidDataException($"{where()}: token id {id} is outside the model's vocabulary (0..{vocab - 1}).");
    }

    /// <summary>Input positions of the request's row: context + continuation minus the last token, at most the context length.</summary>
    private static int WindowLength(ContinuationRequest request, int contextLength) =>
        Math.Min(request.Context.Length + request.Continuation.Length - 1, contextLength);

    /// <summary>
    /// The row's input ids (the last <c>window + 1</c> tokens of context + continuation, minus the last) and, at the
    /// positions that predict a continuation token, that token as the target.
    /// </summary>
    private static void FillRow(ContinuationRequest request, int contextLength, Span<int> ids, Span<int> targets)
    {
        int[] context = request.Context, continuation = request.Continuation;
        int total = context.Length + continuation.Length;
        int window = WindowLength(request, contextLength);
        int skip = total - 1 - window; // tokens cut from the left of the context
        for (int p = 0; p < window; p++)
        {
            int index = skip + p;
            ids[p] = index < context.Length ? context[index] : continuation[index - context.Length];
            int next = index + 1;
            if (next >= context.Length) targets[p] = continuation[next - context.Length];
        }
    }
}
