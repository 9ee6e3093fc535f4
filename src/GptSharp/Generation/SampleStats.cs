using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Generation;

/// <summary>
/// Exercise 5.1 of the book: how often is each token sampled at a given temperature? The book's
/// <c>print_sampled_tokens</c> draws 1,000 samples from the toy vocabulary; the "faster and more accurate way"
/// the exercise asks for is to compute the probabilities themselves.
/// </summary>
public static class SampleStats
{
    /// <summary>The toy vocabulary of section 5.3, in id order.</summary>
    public static IReadOnlyList<string> BookVocabulary { get; } =
        ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"];

    /// <summary>The book's <c>next_token_logits</c> for "every effort moves you".</summary>
    public static IReadOnlyList<float> BookNextTokenLogits { get; } = [4.51f, 0.89f, -1.90f, 6.75f, 1.63f, -1.62f, -1.89f, 6.28f, 1.79f];

    /// <summary>The temperatures of figure 5.14.</summary>
    public static IReadOnlyList<float> BookTemperatures { get; } = [1f, 0.1f, 5f];

    /// <summary>softmax(logits / temperature): the exact probability of drawing each token.</summary>
    public static float[] Probabilities(ReadOnlySpan<float> logits, float temperature)
    {
        var p = logits.ToArray();
        Sampling.ApplyTemperature(p, temperature);
        Sampling.Softmax(p, p);
        return p;
    }

    /// <summary>
    /// The book's <c>print_sampled_tokens</c> counting: <paramref name="draws"/> calls of <c>torch.multinomial(probas, 1)</c>,
    /// returning how often each id came out.
    /// </summary>
    public static int[] CountDraws(ReadOnlySpan<float> probabilities, int draws, IRandomGenerator generator)
    {
        if (draws < 0) throw new ArgumentException($"draws must be ≥ 0, got {draws}.");
        var counts = new int[probabilities.Length];
        for (int i = 0; i < draws; i++) counts[generator.Multinomial(probabilities)]++;
        return counts;
    }
}
