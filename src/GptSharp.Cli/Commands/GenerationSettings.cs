using System.CommandLine;
using GptSharp.Generation;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Cli.Commands;

/// <summary>The options <c>gptsharp generate</c> and <c>gptsharp repl</c> share, and their translation to <see cref="GenerationOptions"/>.</summary>
internal sealed class GenerationSettings
{
    public readonly ModelOptions Model = new();
    public readonly Option<int> MaxNewTokens = new("--max-new-tokens", "-n") { Description = "How many tokens to generate.", DefaultValueFactory = _ => 25 };
    public readonly Option<float> Temperature = new("--temperature", "-t") { Description = "0 = greedy (argmax); > 0 = sample from softmax(logits / T).", DefaultValueFactory = _ => 0f };
    public readonly Option<int?> TopK = new("--top-k") { Description = "Keep only the k most likely tokens (the book's top-k)." };
    public readonly Option<float?> TopP = new("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]." };
    public readonly Option<float?> MinP = new("--min-p") { Description = "Drop tokens less likely than this fraction of the top token's probability, in [0, 1]." };
    public readonly Option<float> RepetitionPenalty = new("--repetition-penalty") { Description = "CTRL/Hugging Face repetition penalty (> 1 discourages repeats).", DefaultValueFactory = _ => 1f };
    public readonly Option<float> FrequencyPenalty = new("--frequency-penalty") { Description = "OpenAI frequency penalty, per earlier occurrence in the generated text.", DefaultValueFactory = _ => 0f };
    public readonly Option<float> PresencePenalty = new("--presence-penalty") { Description = "OpenAI presence penalty, once per token already generated.", DefaultValueFactory = _ => 0f };
    public readonly Option<int> NumBeams = new("--num-beams") { Description = "Beam search with this many beams (greedy scoring; not with --temperature).", DefaultValueFactory = _ => 1 };
    public readonly Option<float> LengthPenalty = new("--length-penalty") { Description = "Beam score = log-probability / length^penalty.", DefaultValueFactory = _ => 1f };
    public readonly Option<bool> EarlyStopping = new("--early-stopping") { Description = "Beam search stops once --num-beams hypotheses have ended with --eos." };
    public readonly Option<int?> Eos = new("--eos") { Description = "Stop at this token id (50256 is <|endoftext|>)." };
    public readonly Option<ulong> Seed = new("--seed") { Description = "Seed of the sampling generator (the book's torch.manual_seed).", DefaultValueFactory = _ => 123UL };
    public readonly Option<string> Rng = new("--rng") { Description = "torch (PyTorch's stream, the book's numbers) or fast.", DefaultValueFactory = _ => "torch" };
    public readonly Option<bool> NoCache = new("--no-cache") { Description = "Run the book's loop: the whole window through the model for every token." };
    public readonly Option<bool> NoSlide = new("--no-slide") { Description = "Stop at the context length instead of sliding the window (and reject longer prompts)." };
    public readonly Option<int?> ContextSize = new("--context-size") { Description = "The window the model sees (default: the model's context length)." };
    public readonly Option<int?> Threads = new("--threads") { Description = "Worker threads (default: all cores)." };
    public readonly Option<bool> Stats = new("--stats") { Description = "Print tokens and tokens/s to stderr at the end." };

    public void AddTo(Command command)
    {
        Model.AddTo(command);
        foreach (var option in new Option[] { MaxNewTokens, Temperature, TopK, TopP, MinP, RepetitionPenalty, FrequencyPenalty,
                     PresencePenalty, NumBeams, LengthPenalty, EarlyStopping, Eos, Seed, Rng, NoCache, NoSlide, ContextSize, Threads, Stats })
            command.Options.Add(option);
    }

    /// <summary>The generation options given on the command line, validated (one-line errors naming the option).</summary>
    public GenerationOptions Read(ParseResult parse) => new GenerationOptions
    {
        Temperature = parse.GetValue(Temperature),
        TopK = parse.GetValue(TopK),
        TopP = parse.GetValue(TopP),
        MinP = parse.GetValue(MinP),
        RepetitionPenalty = parse.GetValue(RepetitionPenalty),
        FrequencyPenalty = parse.GetValue(FrequencyPenalty),
        PresencePenalty = parse.GetValue(PresencePenalty),
        NumBeams = parse.GetValue(NumBeams),
        LengthPenalty = parse.GetValue(LengthPenalty),
        EarlyStopping = parse.GetValue(EarlyStopping),
        EosId = parse.GetValue(Eos),
        UseCache = !parse.GetValue(NoCache),
        Slide = !parse.GetValue(NoSlide),
        ContextSize = parse.GetValue(ContextSize),
    }.Validate();

    /// <summary>The sampling generator (--rng, --seed): the book's <c>torch.manual_seed(seed)</c> by default.</summary>
    public IRandomGenerator CreateRandom(ParseResult parse) => RandomGenerators.Create(parse.GetValue(Rng) ?? RandomGenerators.Torch, parse.GetValue(Seed));

    public static void SetThreads(int? threads)
    {
        if (threads is null) return;
        if (threads < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
        Workers.Count = threads.Value;
    }
}
