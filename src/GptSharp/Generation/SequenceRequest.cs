namespace GptSharp.Generation;

/// <summary>
/// One sequence for the <see cref="BatchScheduler"/> to decode: the prompt's ids, how many tokens at most, how to
/// pick them (the same <see cref="GenerationOptions"/> as <see cref="TextGenerator"/>: penalties, top-k,
/// temperature, top-p, min-p, the end-of-sequence id) and the seed of its own sampling generator.
/// </summary>
/// <param name="TopLogprobs">Report each picked token's log-probability and this many most likely alternatives (−1 = no log-probabilities).</param>
internal sealed record SequenceRequest(int[] PromptIds, int MaxNewTokens, GenerationOptions Options, ulong Seed, int TopLogprobs = -1);

/// <summary>Why a sequence ended.</summary>
internal enum FinishReason
{
    /// <summary>It produced its maximum number of tokens (OpenAI's <c>length</c>).</summary>
    Length,
    /// <summary>It produced the end-of-sequence id (OpenAI's <c>stop</c>).</summary>
    EndOfSequence,
    /// <summary>Its client went away or asked it to stop (a stop text was reached).</summary>
    Cancelled,
    /// <summary>The model failed; the message says why.</summary>
    Failed,
}

/// <summary>A token id with its log-probability under the model.</summary>
internal readonly record struct TokenLogprob(int Token, float Logprob);

/// <summary>
/// What the scheduler tells a request about one of its sequences (<see cref="Choice"/>): a new token, or the end.
/// </summary>
/// <param name="Token">The new token (−1 in the final event).</param>
/// <param name="Logprob">Its log-probability under the model (log-softmax of the raw logits), when asked for.</param>
/// <param name="Top">The most likely tokens at this position, when asked for.</param>
/// <param name="Finish">Set in the final event only.</param>
/// <param name="GeneratedTokens">In the final event: tokens the model produced, the end-of-sequence id included.</param>
internal sealed record SequenceEvent(int Choice, int Token, float Logprob, TokenLogprob[]? Top, FinishReason? Finish = null,
    int GeneratedTokens = 0, string? Error = null);

/// <summary>Thrown by <see cref="BatchScheduler.Submit"/> when its waiting queue is full (HTTP 429).</summary>
internal sealed class QueueFullException(string message) : Exception(message);
