namespace GptSharp.Randomness;

/// <summary>
/// A seeded source of the random numbers a training run consumes: weight initialization, dropout
/// masks, loader shuffles and sampling. Two implementations: <c>TorchGenerator</c> reproduces
/// PyTorch's CPU generator bit for bit (so a run prints the book's numbers) and <see cref="FastRandom"/>
/// is our own, faster stream. Every method consumes the stream the way PyTorch's namesake does.
/// </summary>
public interface IRandomGenerator
{
    /// <summary>Restarts the stream (<c>torch.manual_seed</c>).</summary>
    void ManualSeed(ulong seed);

    /// <summary>Fills with U[from, to) float32 values (<c>tensor.uniform_(from, to)</c>).</summary>
    void Uniform(Span<float> destination, double from, double to);

    /// <summary>Fills with N(mean, std²) float32 values (<c>tensor.normal_(mean, std)</c>).</summary>
    void Normal(Span<float> destination, double mean, double std);

    /// <summary>Fills with 1 (probability <paramref name="p"/>) or 0 (<c>tensor.bernoulli_(p)</c> on float32).</summary>
    void Bernoulli(Span<float> destination, double p);

    /// <summary>A non-negative 63-bit integer (<c>torch.empty((), dtype=torch.int64).random_()</c>).</summary>
    long RandomInt64();

    /// <summary>A random permutation of 0..n-1 (<c>torch.randperm(n, generator=...)</c>).</summary>
    void RandPerm(Span<int> destination);

    /// <summary>
    /// One index drawn with probability proportional to <paramref name="weights"/> (non-negative,
    /// not necessarily normalized), like <c>torch.multinomial(probs, num_samples=1)</c>.
    /// </summary>
    int Multinomial(ReadOnlySpan<float> weights);

    /// <summary>
    /// A fresh, independent generator of the same kind seeded with <paramref name="seed"/>
    /// (<c>g = torch.Generator(); g.manual_seed(seed)</c>, as <c>RandomSampler</c> does at each epoch).
    /// </summary>
    IRandomGenerator NewGenerator(ulong seed);

    /// <summary>The complete state, to save in a training checkpoint.</summary>
    byte[] GetState();

    /// <summary>Restores a state returned by <see cref="GetState"/>.</summary>
    void SetState(ReadOnlySpan<byte> state);

    /// <summary>A name for configs and logs: "torch" or "fast".</summary>
    string Kind { get; }
}
