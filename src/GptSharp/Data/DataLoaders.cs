using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Data;

/// <summary>The training and validation loaders of one run, built the way chapter 5 builds them.</summary>
public sealed record TrainValidationLoaders(DataLoader Train, DataLoader Validation);

/// <summary>The book's <c>create_dataloader_v1</c> and the chapter-5 train/validation set-up with its sanity checks.</summary>
public static class DataLoaders
{
    /// <summary>
    /// The book's <c>create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0)</c>,
    /// over token ids that were already encoded (the book encodes inside the dataset with
    /// <c>allowed_special={"&lt;|endoftext|&gt;"}</c>; do the same before calling this).
    /// </summary>
    public static DataLoader CreateDataloaderV1(ITokenSequence tokens, int batchSize = 4, int maxLength = 256, int stride = 128,
        bool shuffle = true, bool dropLast = true, IRandomGenerator? generator = null)
        => new(new GptDatasetV1(tokens, maxLength, stride), batchSize, shuffle, dropLast, generator);

    /// <summary>Tokens the training loader needs for one batch: <c>batch_size</c> windows (drop_last) plus the last target token.</summary>
    public static long TokensNeededForTraining(int batchSize, int contextLength, int stride)
        => (long)(batchSize - 1) * stride + contextLength + 1;

    /// <summary>Tokens the validation loader needs for one (possibly short) batch: one window plus its last target token.</summary>
    public static long TokensNeededForValidation(int contextLength) => GptDatasetV1.TokensNeededForOneWindow(contextLength);

    /// <summary>
    /// Chapter 5's loaders: training shuffled with drop_last, validation in order without drop_last, both with
    /// <c>stride</c> (the book uses stride = context length). Throws a clear error when either side has too few
    /// tokens for one batch, instead of the book's printed warning followed by an empty loader.
    /// Evaluation alone passes <paramref name="shuffleTraining"/> false (and may pass no generator): a mean over a whole split does not depend on the order.
    /// </summary>
    public static TrainValidationLoaders CreateTrainValidation(ITokenSequence trainTokens, ITokenSequence validationTokens,
        int batchSize, int contextLength, int stride, IRandomGenerator? generator, bool shuffleTraining = true)
    {
        if (batchSize <= 0) throw new ArgumentException($"batchSize must be positive, got {batchSize}.");
        if (contextLength <= 0) throw new ArgumentException($"contextLength must be positive, got {contextLength}.");
        if (stride <= 0) throw new ArgumentException($"stride must be positive, got {stride}.");
        long trainNeeded = TokensNeededForTraining(batchSize, contextLength, stride);
        if (trainTokens.Count < trainNeeded)
            throw new ArgumentException(
                $"Not enough tokens for the training loader: the training split has {trainTokens.Count:N0} tokens and one batch of " +
                $"{batchSize} x {contextLength} (stride {stride}) needs {trainNeeded:N0}. Lower contextLength or batchSize, or use more data.");
        long validationNeeded = TokensNeededForValidation(contextLength);
        if (validationTokens.Count < validationNeeded)
            throw new ArgumentException(
                $"Not enough tokens for the validation loader: the validation split has {validationTokens.Count:N0} tokens and one window of " +
                $"{contextLength} needs {validationNeeded:N0}. Lower contextLength, or use more data.");
        var train = CreateDataloaderV1(trainTokens, batchSize, contextLength, stride, shuffle: shuffleTraining, dropLast: true, generator);
        var validation = CreateDataloaderV1(validationTokens, batchSize, contextLength, stride, shuffle: false, dropLast: false, generator);
        return new TrainValidationLoaders(train, validation);
    }

    /// <summary>The training and validation token ids of a text, split by characters first as the book does.</summary>
    public static (ITokenSequence Train, ITokenSequence Validation) SplitAndEncode(string text, Func<string, int[]> encode, double trainRatio = 0.9)
    {
        var (trainText, validationText) = TextCorpus.SplitTrainValidation(text, trainRatio);
        return (new ArrayTokenSequence(encode(trainText)), new ArrayTokenSequence(encode(validationText)));
    }

    /// <summary>The training and validation shares of a pre-tokenized corpus, split by tokens (a token file has no characters).</summary>
    public static (ITokenSequence Train, ITokenSequence Validation) SplitTokens(ITokenSequence tokens, double trainRatio = 0.9)
    {
        if (!(trainRatio > 0 && trainRatio < 1)) throw new ArgumentException($"train_ratio must be in (0, 1), got {trainRatio}.");
        long split = (long)(trainRatio * tokens.Count);
        return (new TokenSlice(tokens, 0, split), new TokenSlice(tokens, split, tokens.Count - split));
    }
}
