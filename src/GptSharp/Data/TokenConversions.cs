using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Data;

/// <summary>The book's chapter-5 helpers <c>text_to_token_ids</c> and <c>token_ids_to_text</c>.</summary>
public static class TokenConversions
{
    /// <summary>
    /// The book's <c>text_to_token_ids</c>: encodes <paramref name="text"/> with <c>&lt;|endoftext|&gt;</c> allowed and
    /// adds the batch dimension, giving a [1, n] batch.
    /// </summary>
    public static TokenBatch TextToTokenIds(string text, Gpt2Tokenizer tokenizer)
    {
        int[] ids = tokenizer.Encode(text, Gpt2Tokenizer.AllSpecialTokens);
        if (ids.Length == 0) throw new ArgumentException("The text to encode is empty: a model input needs at least one token.");
        return new TokenBatch(ids, 1, ids.Length);
    }

    /// <summary>The book's <c>token_ids_to_text</c>: removes the batch dimension of a [1, n] batch and decodes it.</summary>
    public static string TokenIdsToText(TokenBatch tokenIds, Gpt2Tokenizer tokenizer)
    {
        if (tokenIds.BatchSize != 1)
            throw new ArgumentException($"token_ids_to_text decodes one sequence, a batch of shape [1, n]; got {tokenIds}.");
        return tokenizer.Decode(tokenIds.Row(0));
    }

    /// <summary><c>token_ids_to_text</c> of ids without a batch dimension.</summary>
    public static string TokenIdsToText(ReadOnlySpan<int> tokenIds, Gpt2Tokenizer tokenizer) => tokenizer.Decode(tokenIds);
}
