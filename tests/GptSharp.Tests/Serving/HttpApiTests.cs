using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Serving;

/// <summary>The wire format with a raw HttpClient: completions, SSE chunks, and every refusal with its status.</summary>
[Collection(ServingCollection.Name)]
public class HttpApiTests(ServingFixture server)
{
    private async Task<(int Status, string Body)> SendAsync(HttpMethod method, string path, string? body = null, string contentType = "application/json", HttpClient? client = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null) request.Content = new StringContent(body, Encoding.UTF8, contentType);
        using var response = await (client ?? server.Http).SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>Asserts OpenAI's error body and that the server still answers afterwards.</summary>
    private async Task AssertErrorAsync((int Status, string Body) answer, int status, string? param = null, HttpClient? client = null)
    {
        Assert.True(answer.Status == status, $"expected {status}, got {answer.Status}: {answer.Body}");
        using var json = JsonDocument.Parse(answer.Body);
        var error = json.RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(ApiException.TypeOf(status), error.GetProperty("type").GetString());
        if (param is not null) Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.True(error.TryGetProperty("code", out _));
        var models = await SendAsync(HttpMethod.Get, "/v1/models", client: client);
        Assert.Equal(200, models.Status);
    }

    [Fact]
    public async Task ModelsListsTheModelWithItsChatTemplate()
    {
        var (status, body) = await SendAsync(HttpMethod.Get, "/v1/models");
        Assert.Equal(200, status);
        var model = JsonDocument.Parse(body).RootElement.GetProperty("data")[0];
        Assert.Equal("gptsharp", model.GetProperty("id").GetString());
        Assert.Equal(ChatTemplate.Text, model.GetProperty("chat_template").GetString());
        Assert.Equal(64, model.GetProperty("context_length").GetInt32());
    }

    [Fact]
    public async Task CompletionMatchesTheLibraryWithExactUsage()
    {
        const string prompt = "Every effort moves you";
        var (status, body) = await server.PostAsync("/v1/completions", new
        {
            model = "gptsharp", prompt, max_tokens = 12, temperature = 1.3, top_k = 50, min_p = 0.01, presence_penalty = 0.5, frequency_penalty = 0.3, seed = 42,
        });
        Assert.Equal(200, status);
        var settings = new CompletionSettings { MaxTokens = 12, Temperature = 1.3f, TopK = 50, MinP = 0.01f, PresencePenalty = 0.5f, FrequencyPenalty = 0.3f };
        int[] expected = server.Reference(TextCompletion.Encode(prompt), settings, 42);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(Gpt2Tokenizer.Instance.Decode(expected), choice.GetProperty("text").GetString());
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.Equal(expected.Length == 12 ? "length" : "stop", choice.GetProperty("finish_reason").GetString());
        var usage = body.GetProperty("usage");
        Assert.Equal(TextCompletion.Encode(prompt).Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.Length + (expected.Length < 12 ? 1 : 0), usage.GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task CompletionLogprobsAndSeveralChoices()
    {
        var (status, body) = await server.PostAsync("/v1/completions", new { prompt = "Hello", max_tokens = 5, temperature = 0, logprobs = 3, n = 2 });
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices");
        Assert.Equal(2, choices.GetArrayLength());
        // Greedy: both choices are the argmax continuation, each token the most likely one.
        Assert.Equal(choices[0].GetProperty("text").GetString(), choices[1].GetProperty("text").GetString());
        var logprobs = choices[0].GetProperty("logprobs");
        var tokenLogprobs = logprobs.GetProperty("token_logprobs").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        var tops = logprobs.GetProperty("top_logprobs").EnumerateArray().ToArray();
        Assert.Equal(tokenLogprobs.Length, tops.Length);
        Assert.Equal(logprobs.GetProperty("tokens").GetArrayLength(), tokenLogprobs.Length);
        for (int i = 0; i < tops.Length; i++)
        {
            var top = tops[i].EnumerateObject().Select(p => p.Value.GetSingle()).ToArray();
            Assert.InRange(top.Length, 1, 3);
            Assert.Equal(top.Max(), tokenLogprobs[i], 5);
        }
        Assert.Equal(10, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task StreamingSendsOpenAiChunksEndingWithDone()
    {
        const string prompt = "Every effort moves you";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { prompt, max_tokens = 30, seed = 8, stream = true, stream_options = new { include_usage = true } }), Encoding.UTF8, "application/json"),
        };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        string[] events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var text = new StringBuilder();
        string? finish = null;
        JsonElement? usage = null;
        foreach (string e in events[..^1])
        {
            Assert.StartsWith("data: ", e);
            var chunk = JsonDocument.Parse(e["data: ".Length..]).RootElement;
            Assert.Equal("text_completion", chunk.GetProperty("object").GetString());
            if (chunk.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) usage = u;
            foreach (var choice in chunk.GetProperty("choices").EnumerateArray())
            {
                string piece = choice.GetProperty("text").GetString()!;
                // Whole characters only: no lone surrogate, no replacement character from a split UTF-8 sequence.
                Assert.True(piece.Length == 0 || !char.IsHighSurrogate(piece[^1]), "a character was split between chunks");
                text.Append(piece);
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
            }
        }
        var expected = server.Reference(TextCompletion.Encode(prompt), new CompletionSettings { MaxTokens = 30 }, 8);
        Assert.Equal(Gpt2Tokenizer.Instance.Decode(expected), text.ToString());
        Assert.NotNull(finish);
        Assert.NotNull(usage);
        Assert.Equal(TextCompletion.Encode(prompt).Length, usage!.Value.GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task BadRequestsGetTheirStatusAndTheServerKeepsServing()
    {
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", "), 400);
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "[1, 2]"), 400);
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": \"many\"}"), 400, "max_tokens");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"top_p\": 0}"), 400, "top_p");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"n\": 1000}"), 400, "n");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"stop\": [\"\"]}"), 400, "stop");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"max_tokens\": 3}"), 400, "prompt");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/chat/completions", "{\"messages\": [{\"role\": \"robot\", \"content\": \"Hi\"}]}"), 400, "messages[0].role");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", JsonSerializer.Serialize(new { prompt = string.Join(' ', Enumerable.Repeat("word", 65)) })), 400, "prompt");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": [99999]}"), 400, "prompt");
        await AssertErrorAsync(await SendAsync(HttpMethod.Get, "/v1/nothing-here"), 404);
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"model\": \"gpt-4\", \"prompt\": \"Hi\"}"), 404, "model");
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/models", "{}"), 405);
        string huge = JsonSerializer.Serialize(new { prompt = new string('a', 2 << 20) });
        try
        {
            await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", huge), 413);
        }
        catch (HttpRequestException)
        {
            // Kestrel may answer 413 and close the connection while the client is still sending the body (broken pipe):
            // the body was refused either way; the checks below show the server still serves.
        }
    }

    [Fact]
    public async Task AClientThatDisconnectsFreesItsSlot()
    {
        // A long context: the stream cannot end on its own before the client goes away.
        // Wide enough that 1000 steps take seconds even on a fast machine, so the disconnect is noticed long before the end.
        using var model = new GptSharp.Model.GptModel(ServingFixture.Config with { ContextLength = 1024, EmbeddingDim = 256, Heads = 4, Layers = 4 }, new GptSharp.Randomness.FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 1, maxQueueLength: 0);
        await using var served = GptServer.Create(scheduler, new ServerOptions { Port = 0 });
        await served.StartAsync();
        using var client = new HttpClient { BaseAddress = served.Address };
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("{\"prompt\": \"Hi\", \"max_tokens\": 1000, \"stream\": true}", Encoding.UTF8, "application/json"),
        })
        using (var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync());
            Assert.Equal(1, scheduler.ActiveCount);
        } // the connection is dropped here
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (scheduler.ActiveCount > 0 && clock.Elapsed < TimeSpan.FromSeconds(20)) await Task.Delay(10);
        Assert.Equal(0, scheduler.ActiveCount);
        Assert.True(scheduler.Steps < 999, "the sequence ran to its end instead of leaving when the client went away");
        // The only slot is free again.
        var (status, body) = await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 2}", client: client);
        Assert.True(status == 200, body);
    }

    [Fact]
    public async Task ApiKeyAndFullQueueAreRefused()
    {
        using var model = new GptSharp.Model.GptModel(ServingFixture.Config, new GptSharp.Randomness.FastRandom(11));
        using var scheduler = new BatchScheduler(model, maxBatchSize: 1, maxQueueLength: 0);
        await using var guarded = GptServer.Create(scheduler, new ServerOptions { Port = 0, ApiKey = "secret" });
        await guarded.StartAsync();
        using var client = new HttpClient { BaseAddress = guarded.Address };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "secret");
        using var anonymous = new HttpClient { BaseAddress = guarded.Address };
        Assert.Equal(401, (int)(await anonymous.GetAsync("/v1/models")).StatusCode);
        anonymous.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        var wrong = await anonymous.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(401, (int)wrong.StatusCode);
        Assert.Contains("authentication_error", await wrong.Content.ReadAsStringAsync());
        // One slot, no queue: two choices cannot both be placed.
        await AssertErrorAsync(await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"n\": 2}", client: client), 429, client: client);
        var (status, body) = await SendAsync(HttpMethod.Post, "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 3}", client: client);
        Assert.True(status == 200, body);
    }
}
