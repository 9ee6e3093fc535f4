namespace GptSharp.Randomness;

/// <summary>The generator kinds a run can name (<c>--rng</c>, <c>rng</c> in a run config).</summary>
public static class RandomGenerators
{
    /// <summary>"torch": PyTorch's CPU generator bit for bit (the default: a run prints the book's numbers).</summary>
    public const string Torch = "torch";

    /// <summary>"fast": our own xoshiro256** stream (different numbers, cheaper draws).</summary>
    public const string Fast = "fast";

    public static IReadOnlyList<string> Kinds { get; } = [Torch, Fast];

    /// <summary>A generator of <paramref name="kind"/> seeded like <c>torch.manual_seed(seed)</c>.</summary>
    public static IRandomGenerator Create(string kind, ulong seed) => kind switch
    {
        Torch => new TorchGenerator(seed),
        Fast => new FastRandom(seed),
        _ => throw new ArgumentException($"RunConfig.Rng must be \"{Torch}\" or \"{Fast}\", got \"{kind}\"."),
    };
}
