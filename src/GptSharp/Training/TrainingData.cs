using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Training;

/// <summary>
/// The token ids a run trains and validates on, from what <c>--data</c> names: nothing (the bundled The Verdict),
/// a token file made by <c>gptsharp prepare</c> (memory-mapped, split 90/10 by tokens), or text files
/// (a file, a directory or a glob; joined with <c>&lt;|endoftext|&gt;</c>, split 90/10 by characters as the book
/// does, then encoded with the parallel encoder).
/// </summary>
public sealed class TrainingData : IDisposable
{
    private readonly IDisposable? _owner;

    private TrainingData(ITokenSequence train, ITokenSequence validation, string description, IDisposable? owner)
    {
        Train = train;
        Validation = validation;
        Description = description;
        _owner = owner;
    }

    public ITokenSequence Train { get; }
    public ITokenSequence Validation { get; }

    /// <summary>One line for the console: where the data came from and how many tokens each side has.</summary>
    public string Description { get; }

    public static TrainingData Load(string? data, double trainRatio, Gpt2Tokenizer tokenizer)
    {
        Func<string, int[]> encode = text => tokenizer.EncodeParallel(text, Gpt2Tokenizer.AllSpecialTokens);
        if (string.IsNullOrEmpty(data))
        {
            var (train, validation) = DataLoaders.SplitAndEncode(TextCorpus.TheVerdict(), encode, trainRatio);
            return new TrainingData(train, validation, Describe(TextCorpus.BundledVerdictName, train, validation), null);
        }
        if (File.Exists(data) && TokenFile.IsTokenFile(data))
        {
            var file = TokenFile.Open(data);
            try
            {
                if (file.Header.VocabSize > Gpt2Tokenizer.VocabSize)
                    throw new InvalidDataException($"{data}: made for a vocabulary of {file.Header.VocabSize} ids, the GPT-2 tokenizer has {Gpt2Tokenizer.VocabSize}.");
                file.CheckIds(Gpt2Tokenizer.VocabSize);
                var (train, validation) = DataLoaders.SplitTokens(file, trainRatio);
                return new TrainingData(train, validation, Describe($"{data} (token file, split by tokens)", train, validation), file);
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }
        var files = TextCorpus.ResolveFiles(data);
        string text = TextCorpus.ReadCorpus(files);
        var (t, v) = DataLoaders.SplitAndEncode(text, encode, trainRatio);
        string name = files.Count == 1 ? files[0] : $"{data} ({files.Count} files)";
        return new TrainingData(t, v, Describe(name, t, v), null);
    }

    private static string Describe(string name, ITokenSequence train, ITokenSequence validation) =>
        $"{name}: {train.Count:N0} training tokens, {validation.Count:N0} validation tokens";

    public void Dispose() => _owner?.Dispose();
}
