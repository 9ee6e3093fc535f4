using System.Net.Http.Json;
using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Serving;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Randomness;

namespace GptSharp.Tests.Serving;

/// <summary>
/// A tiny random model with GPT-2's vocabulary, a <see cref="BatchScheduler"/> over it and a <see cref="GptServer"/>
/// on 127.0.0.1 at a free port, shared by the serving tests.
/// </summary>
public sealed class ServingFixture : IAsyncLifetime
{
    public static GptConfig Config { get; } = new() { VocabSize = 50257, ContextLength = 64, EmbeddingDim = 16, Heads = 2, Layers = 2, DropRate = 0f };

    public GptModel Model { get; } = new(Config, new FastRandom(11));

    /// <summary>The same weights again (same seed), for references computed while the server decodes on <see cref="Model"/>.</summary>
    public GptModel ReferenceModel { get; } = new(Config, new FastRandom(11));

    public BatchScheduler Scheduler { get; private set; } = null!;

    public GptServer Server { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;

    public Uri Api => new(Server.Address, "v1");

    public async Task InitializeAsync()
    {
        Scheduler = new BatchScheduler(Model, maxBatchSize: 8, maxQueueLength: 256);
        Server = GptServer.Create(Scheduler, new ServerOptions { Port = 0 });
        await Server.StartAsync();
        Http = new HttpClient { BaseAddress = Server.Address, Timeout = TimeSpan.FromSeconds(60) };
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        Scheduler.Dispose();
        Model.Dispose();
        ReferenceModel.Dispose();
    }

    /// <summary>
    /// What the library's own <see cref="TextGenerator"/> (one sequence, no batching, no server) makes of the prompt
    /// with OpenAI's sampling settings: the reference every served answer is checked against.
    /// </summary>
    internal int[] Reference(int[] prompt, CompletionSettings settings, ulong seed)
    {
        lock (ReferenceModel)
        {
            using var generator = new TextGenerator(ReferenceModel, settings.ToGenerationOptions() with { Slide = false },
                settings.Temperature > 0 ? new TorchGenerator(seed) : null);
            return generator.Stream(prompt, settings.MaxTokens).ToArray();
        }
    }

    /// <summary>The decoded reference text.</summary>
    internal string ReferenceText(string prompt, CompletionSettings settings, ulong seed) =>
        Gpt2Tokenizer.Instance.Decode(Reference(TextCompletion.Encode(prompt), settings, seed));

    public async Task<(int Status, JsonElement Body)> PostAsync(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        return ((int)response.StatusCode, await response.Content.ReadFromJsonAsync<JsonElement>());
    }
}

[CollectionDefinition(Name)]
public sealed class ServingCollection : ICollectionFixture<ServingFixture>
{
    public const string Name = "serving";
}
