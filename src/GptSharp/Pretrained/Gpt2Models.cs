namespace GptSharp.Pretrained;

/// <summary>
/// One of OpenAI's four GPT-2 releases: its folder name on OpenAI's server (<c>124M</c>), the
/// book-style alias (<c>gpt2-small</c>) and the byte sizes of its files where they are known
/// (files without a known size are checked against the server's Content-Length instead).
/// </summary>
public sealed record Gpt2ModelSize(string Name, string Alias, IReadOnlyDictionary<string, long> KnownFileSizes)
{
    /// <summary>The seven files of every size, as the book's <c>download_and_load_gpt2</c> fetches them.</summary>
    public IReadOnlyList<string> FileNames => Gpt2Models.FileNames;

    public long? ExpectedSize(string fileName) => KnownFileSizes.TryGetValue(fileName, out long n) ? n : null;

    public override string ToString() => $"{Alias} ({Name})";
}

/// <summary>The GPT-2 sizes, their download location and the local cache they go to.</summary>
public static class Gpt2Models
{
    /// <summary>The file names OpenAI publishes per model size (all seven, as the book downloads them).</summary>
    public static IReadOnlyList<string> FileNames { get; } =
        ["checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta", "vocab.bpe"];

    /// <summary>OpenAI's public bucket (the URL in the book's <c>gpt_download.py</c>).</summary>
    public const string DefaultBaseUrl = "https://openaipublic.blob.core.windows.net/gpt-2/models";

    /// <summary>Environment variable that moves the cache (default <c>~/.cache/gptsharp</c>).</summary>
    public const string HomeVariable = "GPTSHARP_HOME";

    // Shared by every size: the tokenizer files are identical, and `checkpoint` only names "model.ckpt".
    private static readonly Dictionary<string, long> Shared = new()
    {
        ["checkpoint"] = 77,
        ["encoder.json"] = 1_042_301,
        ["vocab.bpe"] = 456_318,
    };

    private static IReadOnlyDictionary<string, long> Sizes(long data, params (string File, long Size)[] more)
    {
        var d = new Dictionary<string, long>(Shared) { ["model.ckpt.data-00000-of-00001"] = data };
        foreach (var (file, size) in more) d[file] = size;
        return d;
    }

    /// <summary>
    /// 124M: all seven sizes are OpenAI's published ones. Larger models: the data-shard size is the
    /// sum of their tensors (4 bytes × parameters, see docs/checkpoint-formats.md §1.4); their
    /// hparams/index/meta sizes are taken from the server's Content-Length.
    /// </summary>
    public static IReadOnlyList<Gpt2ModelSize> All { get; } =
    [
        new("124M", "gpt2-small", Sizes(497_759_232, ("hparams.json", 90), ("model.ckpt.index", 5_215), ("model.ckpt.meta", 471_155))),
        new("355M", "gpt2-medium", Sizes(1_419_292_672)),
        new("774M", "gpt2-large", Sizes(3_096_120_320)),
        new("1558M", "gpt2-xl", Sizes(6_230_444_800)),
    ];

    /// <summary>Finds a size by OpenAI name or alias (<c>124M</c>, <c>gpt2-small</c>, <c>gpt2-124M</c>, case-insensitive), or null.</summary>
    public static Gpt2ModelSize? TryFind(string name)
    {
        foreach (var size in All)
        {
            if (name.Equals(size.Name, StringComparison.OrdinalIgnoreCase) || name.Equals(size.Alias, StringComparison.OrdinalIgnoreCase)
                || name.Equals("gpt2-" + size.Name, StringComparison.OrdinalIgnoreCase))
                return size;
        }
        return null;
    }

    /// <summary>Like <see cref="TryFind"/> but throws a one-line error listing the valid names.</summary>
    public static Gpt2ModelSize Find(string name) => TryFind(name)
        ?? throw new ArgumentException($"unknown GPT-2 model '{name}': expected one of {string.Join(", ", All.Select(s => $"{s.Alias} ({s.Name})"))}.");

    /// <summary><c>$GPTSHARP_HOME</c>, or <c>~/.cache/gptsharp</c>.</summary>
    public static string HomeDirectory
    {
        get
        {
            string? home = Environment.GetEnvironmentVariable(HomeVariable);
            if (!string.IsNullOrWhiteSpace(home)) return home;
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "gptsharp");
        }
    }

    /// <summary>Where a size is cached: <c>HOME/gpt2/124M</c>.</summary>
    public static string CacheDirectory(Gpt2ModelSize size, string? home = null) => Path.Combine(home ?? HomeDirectory, "gpt2", size.Name);

    /// <summary>
    /// Resolves a model spec that names a GPT-2 size (<c>gpt2-small</c>, <c>124M</c>, ...) to its cache
    /// folder. Returns null when <paramref name="spec"/> is an existing path or not a size name; throws a
    /// one-line error saying how to get the files when the size is not (completely) downloaded.
    /// </summary>
    public static string? TryResolveCached(string spec, string? home = null)
    {
        if (File.Exists(spec) || Directory.Exists(spec)) return null; // a path wins over a name
        var size = TryFind(spec);
        if (size is null) return null;
        string dir = CacheDirectory(size, home);
        string[] needed = ["hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001"];
        var missing = needed.Where(f => !File.Exists(Path.Combine(dir, f))).ToList();
        if (missing.Count == 0) return dir;
        bool partial = Directory.Exists(dir) && Directory.EnumerateFiles(dir, "*.part").Any();
        throw new FileNotFoundException(
            $"GPT-2 {size} is {(partial ? "only partly" : "not")} downloaded ({dir} lacks {string.Join(", ", missing)}): "
            + $"run `gptsharp download {size.Alias}`{(partial ? " to resume" : "")}, or load a folder holding OpenAI's files "
            + $"(hparams.json, model.ckpt.index, model.ckpt.data-00000-of-00001) copied there, or copy them into {dir} (see the README).", dir);
    }

    /// <summary>True when every file of <paramref name="size"/> is in <paramref name="directory"/> with its known size.</summary>
    public static bool IsComplete(Gpt2ModelSize size, string directory) => size.FileNames.All(f =>
    {
        var info = new FileInfo(Path.Combine(directory, f));
        return info.Exists && (size.ExpectedSize(f) is not { } n || info.Length == n);
    });
}
