using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Training;

/// <summary>
/// The token ids a run trains and validates on, from what <c>--data</c> (and <c>--val-data</c>) name: nothing (the bundled
/// The Verdict), token files (GptSharp's own from <c>gptsharp prepare</c>, llm.c shards, nanoGPT's bare <c>.bin</c>: one or a
/// glob of many, memory-mapped, read as one run of ids in name order), or text (a file, a directory or a glob of .txt,
/// JSON Lines and Parquet files, each record a document, joined with <c>&lt;|endoftext|&gt;</c>, then encoded with the
/// parallel encoder). Without <c>--val-data</c> the last 10 % is the validation set, split by characters for text as the
/// book does and by tokens for token files; with it, all of <c>--data</c> trains and all of <c>--val-data</c> validates.
/// </summary>
public sealed class TrainingData : IDisposable
{
    private readonly List<IDisposable> _owned;

    private TrainingData(ITokenSequence train, ITokenSequence validation, string description, List<IDisposable> owned)
    {
        Fingerprint = $"train {Identify(train)}; validation {Identify(validation)}";
        Train = train;
        Validation = validation;
        Description = description;
        _owned = owned;
    }

    public ITokenSequence Train { get; }
    public ITokenSequence Validation { get; }

    /// <summary>One line for the console: where the data came from and how many tokens each side has.</summary>
    public string Description { get; }

    /// <summary>
    /// The token files of each side by name with their token counts (for text, the token counts): a checkpoint records it,
    /// and a resume on other data is refused (the data-order position would point elsewhere).
    /// </summary>
    public string Fingerprint { get; }

    /// <summary>The file and offset of token <paramref name="index"/> of the training side.</summary>
    public DataPosition Locate(long index)
    {
        ITokenSequence tokens = Train;
        if (tokens is TokenSlice slice) (tokens, index) = (slice.Source, slice.Start + index);
        return tokens switch
        {
            TokenShards shards => shards.Locate(index) is var (shard, offset) ? new DataPosition(Path.GetFileName(shards.Shards[shard].Path), offset) : null!,
            TokenShard shard => new DataPosition(Path.GetFileName(shard.Path), index),
            _ => new DataPosition("text", index),
        };
    }

    private static string Identify(ITokenSequence tokens) => tokens switch
    {
        TokenSlice slice => $"[{slice.Start:N0}, {slice.Start + slice.Count:N0}) of {Identify(slice.Source)}",
        TokenShards shards => string.Join(", ", shards.Shards.Select(Identify)),
        TokenShard shard => $"{Path.GetFileName(shard.Path)} ({shard.Count:N0} tokens)",
        _ => $"text ({tokens.Count:N0} tokens)",
    };

    /// <param name="validationData">The validation set (same forms as <paramref name="data"/>); null: split <paramref name="data"/>.</param>
    public static TrainingData Load(string? data, double trainRatio, Gpt2Tokenizer tokenizer, string? validationData = null, CorpusReadOptions? read = null)
    {
        read ??= new CorpusReadOptions();
        Func<string, int[]> encode = text => tokenizer.Encode(text, Gpt2Tokenizer.AllSpecialTokens);
        var owned = new List<IDisposable>();
        try
        {
            if (validationData is not null)
            {
                if (string.IsNullOrEmpty(data)) throw new ArgumentException("RunConfig.ValidationData needs RunConfig.Data: the bundled The Verdict is split 90/10.");
                var (train, trainName) = LoadWhole(data, "RunConfig.Data", encode, read, owned);
                var (validation, validationName) = LoadWhole(validationData, "RunConfig.ValidationData", encode, read, owned);
                return new TrainingData(train, validation,
                    $"{trainName}: {train.Count:N0} training tokens; {validationName}: {validation.Count:N0} validation tokens", owned);
            }
            if (string.IsNullOrEmpty(data))
            {
                var (train, validation) = DataLoaders.SplitAndEncode(TextCorpus.TheVerdict(), encode, trainRatio);
                return new TrainingData(train, validation, Describe(TextCorpus.BundledVerdictName, train, validation), owned);
            }
            var files = TextCorpus.ResolveFiles(data);
            if (OpenTokens(files, "RunConfig.Data", owned) is var (tokens, name))
            {
                var (train, validation) = DataLoaders.SplitTokens(tokens, trainRatio);
                return new TrainingData(train, validation, Describe($"{name}, split by tokens", train, validation), owned);
            }
            string text = TextCorpus.ReadCorpus(files, read);
            var (t, v) = DataLoaders.SplitAndEncode(text, encode, trainRatio);
            return new TrainingData(t, v, Describe(TextName(data, files), t, v), owned);
        }
        catch
        {
            foreach (var o in owned) o.Dispose();
            throw;
        }
    }

    /// <summary>All of what <paramref name="spec"/> names, as one run of ids.</summary>
    private static (ITokenSequence Tokens, string Name) LoadWhole(string spec, string option, Func<string, int[]> encode, CorpusReadOptions read, List<IDisposable> owned)
    {
        IReadOnlyList<string> files;
        try
        {
            files = TextCorpus.ResolveFiles(spec);
        }
        catch (Exception e) when (e is IOException or ArgumentException)
        {
            throw new ArgumentException(e.Message.Replace("RunConfig.Data", option, StringComparison.Ordinal), e);
        }
        if (OpenTokens(files, option, owned) is var (tokens, name)) return (tokens, name);
        return (new ArrayTokenSequence(encode(TextCorpus.ReadCorpus(files, read))), TextName(spec, files));
    }

    /// <summary>The files as token shards when they are token files (checked against the vocabulary), or null when they are text.</summary>
    private static (ITokenSequence, string)? OpenTokens(IReadOnlyList<string> files, string option, List<IDisposable> owned)
    {
        int tokenFiles = files.Count(IsTokens);
        if (tokenFiles == 0) return null;
        if (tokenFiles != files.Count)
            throw new ArgumentException($"{option}: the files mix token files and text ({files.First(f => !IsTokens(f))}); give one or the other.");
        var shards = TokenShards.Open(files);
        owned.Add(shards);
        shards.CheckIds(Gpt2Tokenizer.VocabSize);
        var formats = string.Join(", ", shards.Shards.Select(s => s.Format).Distinct());
        string name = files.Count == 1 ? $"{files[0]} ({formats} token file)" : $"{files.Count} token files ({formats}: {Path.GetFileName(files[0])} ... {Path.GetFileName(files[^1])})";
        return (shards.Shards.Count == 1 ? shards.Shards[0] : shards, name);
    }

    private static bool IsTokens(string file) => TokenFile.IsTokenFile(file) || CorpusFile.TryClassify(file)?.Format == DocumentFormat.Tokens;

    private static string TextName(string spec, IReadOnlyList<string> files) => files.Count == 1 ? files[0] : $"{spec} ({files.Count} files)";

    private static string Describe(string name, ITokenSequence train, ITokenSequence validation) =>
        $"{name}: {train.Count:N0} training tokens, {validation.Count:N0} validation tokens";

    public void Dispose()
    {
        foreach (var o in _owned) o.Dispose();
    }
}
