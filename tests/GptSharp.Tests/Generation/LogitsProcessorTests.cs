using GptSharp.Generation;

namespace GptSharp.Tests.Generation;

public class LogitsProcessorTests
{
    private static readonly float NegInf = float.NegativeInfinity;

    private static float[] LogOf(params float[] probabilities) => probabilities.Select(p => MathF.Log(p)).ToArray();

    [Theory]
    [InlineData(0.3f, 1)]
    [InlineData(0.45f, 1)]
    [InlineData(0.79f, 2)]
    [InlineData(0.81f, 3)]
    [InlineData(0.96f, 4)]
    [InlineData(1f, 4)]
    public void TopPKeepsTheSmallestSetReachingP(float p, int expectedKept)
    {
        // Probabilities 0.15, 0.5, 0.05, 0.3 (shuffled): sorted 0.5, 0.3, 0.15, 0.05; cumulative 0.5, 0.8, 0.95, 1.
        var logits = LogOf(0.15f, 0.5f, 0.05f, 0.3f);
        new TopPProcessor(p).Process([], 0, logits);
        int[] byRank = [1, 3, 0, 2];
        for (int r = 0; r < 4; r++)
            Assert.Equal(r < expectedKept, logits[byRank[r]] > NegInf);
    }

    [Fact]
    public void TopPIgnoresTokensAlreadyMasked()
    {
        float[] logits = [NegInf, 2f, NegInf, 1f];
        new TopPProcessor(0.5f).Process([], 0, logits);
        Assert.Equal([NegInf, 2f, NegInf, NegInf], logits);
    }

    [Fact]
    public void MinPDropsTokensBelowAFractionOfTheTopProbability()
    {
        var logits = LogOf(0.5f, 0.3f, 0.15f, 0.05f);
        new MinPProcessor(0.2f).Process([], 0, logits); // threshold 0.1
        Assert.True(logits[2] > NegInf);
        Assert.Equal(NegInf, logits[3]);

        var strict = LogOf(0.5f, 0.3f, 0.15f, 0.05f);
        new MinPProcessor(0.65f).Process([], 0, strict); // threshold 0.325
        Assert.Equal(1, strict.Count(l => l > NegInf));
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOncePerToken()
    {
        float[] logits = [2f, -2f, 1f, 0.5f];
        var processor = new RepetitionPenaltyProcessor(2f);
        processor.Process([0, 1, 0], 1, logits); // the prompt counts too; token 0 appears twice but is penalized once
        Assert.Equal([1f, -4f, 1f, 0.5f], logits);
        float[] again = [2f, -2f, 1f, 0.5f];
        processor.Process([3], 1, again); // a new call forgets the previous row
        Assert.Equal([2f, -2f, 1f, 0.25f], again);
    }

    [Fact]
    public void FrequencyAndPresencePenaltiesCountGeneratedTokensOnly()
    {
        var processor = new FrequencyPresencePenaltyProcessor(frequencyPenalty: 0.5f, presencePenalty: 1f);
        float[] logits = [3f, 3f, 3f, 3f];
        processor.Process([2, 0, 0, 1], promptLength: 1, logits);
        Assert.Equal([3f - 2 * 0.5f - 1f, 3f - 0.5f - 1f, 3f, 3f], logits);
        // Counts do not leak into the next call.
        float[] next = [3f, 3f, 3f, 3f];
        processor.Process([2, 3], promptLength: 1, next);
        Assert.Equal([3f, 3f, 3f, 1.5f], next);
    }

    [Fact]
    public void OptionsBuildTheProcessorsInOrder()
    {
        var options = new GenerationOptions
        {
            Temperature = 0.7f, TopK = 5, TopP = 0.9f, MinP = 0.05f, RepetitionPenalty = 1.2f, FrequencyPenalty = 0.1f,
        };
        var types = options.CreatePipeline().Processors.Select(p => p.GetType()).ToArray();
        Assert.Equal([typeof(RepetitionPenaltyProcessor), typeof(FrequencyPresencePenaltyProcessor), typeof(TopKProcessor),
            typeof(TemperatureProcessor), typeof(TopPProcessor), typeof(MinPProcessor)], types);
        Assert.Empty(new GenerationOptions().CreatePipeline().Processors);
    }

    [Theory]
    [InlineData("Temperature")]
    [InlineData("TopK")]
    [InlineData("TopP")]
    [InlineData("NumBeams")]
    public void BadOptionsAreClearErrors(string option)
    {
        var options = option switch
        {
            "Temperature" => new GenerationOptions { Temperature = -0.5f },
            "TopK" => new GenerationOptions { TopK = 0 },
            "TopP" => new GenerationOptions { TopP = 1.5f },
            _ => new GenerationOptions { NumBeams = 3, Temperature = 1f },
        };
        var error = Assert.Throws<ArgumentException>(() => options.Validate());
        Assert.Contains("GenerationOptions." + option, error.Message); // the property; the CLI shows its flag (CliFlags)
    }
}
